"""Milvus's publish protocol (no multi-collection transactions): a write interrupted at any step is
invisible to readers, and `recover()` finishes or drops it. Runs on Milvus Lite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scale_servers import have_milvus
from test_store_contract import EN_PAGES, ZH_PAGES, fake_query, ingest, make_doc

from rag.settings import Settings
from rag.store import STORES

pytestmark = [pytest.mark.scale, pytest.mark.skipif(not have_milvus(), reason="pip install pymilvus milvus-lite")]


@pytest.fixture
def store(fake_settings: Settings, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    from rag.store.milvus import release

    settings = fake_settings.model_copy(deep=True)
    settings.store.backend = "milvus"
    settings.store.url = str(tmp_path / "milvus.db")
    st = STORES.create("milvus").open(settings, "kb", embedder_id="fake", dim=64, create=True)
    yield st
    st.close()
    release(settings.store.url)


def _half_write(store, doc, chunks, *, replaces: str = "") -> None:  # type: ignore[no-untyped-def]
    """What add_document has done when killed after inserting chunks, before publishing."""
    from conftest import FakeEmbedder

    c = store._client()
    c.upsert(store._docs, [store._doc_row(doc, chunks[0].doc_id, len(chunks), "writing", replaces, 0.0)])
    vecs = FakeEmbedder().embed_documents([ch.text for ch in chunks])
    rows = [
        {
            "id": ch.id,
            "doc_id": ch.doc_id,
            "ordinal": ch.ordinal,
            "text": ch.text,
            "page_start": 1,
            "page_end": 1,
            "char_start": 0,
            "char_end": 1,
            "section": "",
            "token_count": 0,
            "text_sha": "x",
            "source": doc.source,
            "tokens": "policy marker",
            "embedding": v.tolist(),
        }
        for ch, v in zip(chunks, vecs)
    ]
    c.insert(store._chunks, rows)
    c.flush(store._chunks)


def test_unpublished_write_is_hidden_then_recovered(store) -> None:  # type: ignore[no-untyped-def]
    old = ingest(store, *make_doc("en.pdf", EN_PAGES))
    doc, chunks = make_doc("zh.pdf", ZH_PAGES)
    _half_write(store, doc, chunks)
    assert [d.id for d in store.list_documents()] == [old.id]
    assert store.find_by_sha(doc.sha256) is None
    assert store.keyword_search("policy marker", 5) == []
    assert all(h.chunk.doc_id == old.id for h in store.dense_search(fake_query(ZH_PAGES[0]), 10))
    assert store.stats()["pending_documents"] == 1
    assert store.recover(stale_after_s=3600) == {"finished_replaces": 0, "dropped_writes": 0}  # maybe still writing
    assert store.recover(stale_after_s=0) == {"finished_replaces": 0, "dropped_writes": 1}
    assert store.stats()["pending_documents"] == 0 and store.stats()["chunks"] == old.chunks
    # Writing it for real afterwards works and publishes it.
    new = ingest(store, doc, chunks)
    assert {d.id for d in store.list_documents()} == {old.id, new.id}


def test_published_replace_hides_the_old_version_until_recovered(store) -> None:  # type: ignore[no-untyped-def]
    old = ingest(store, *make_doc("en.pdf", EN_PAGES))
    doc, chunks = make_doc("en.pdf", [EN_PAGES[0] + " Updated."], version="2")
    _half_write(store, doc, chunks, replaces=old.id)
    # Killed after the flip to 'ready' but before the old version was deleted:
    c = store._client()
    c.upsert(store._docs, [store._doc_row(doc, chunks[0].doc_id, len(chunks), "ready", old.id, 0.0)])
    assert [d.id for d in store.list_documents()] == [chunks[0].doc_id]  # the old one is already hidden
    assert all(h.chunk.doc_id != old.id for h in store.dense_search(fake_query(EN_PAGES[1]), 10))
    assert store.recover()["finished_replaces"] == 1
    assert store.get_chunks([f"{old.id}:0"]) == [] and store.stats()["pending_documents"] == 0
