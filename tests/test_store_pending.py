"""Deferred embedding in the stores: add_document(vectors=None), the embedding queue kept in the KB,
add_embeddings, embedding_counts — on faiss and on a real PostgreSQL + pgvector (as in test_store_contract);
Milvus refuses it (checked without a server).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder
from scale_servers import backend_params, have_pgserver
from test_store_contract import EN_PAGES, OTHER_PAGES, ZH_PAGES, make_doc, pg_url  # noqa: F401 - pg_url: a fixture

from rag.errors import EmbeddingsPending, InvalidRequest
from rag.protocols import Store
from rag.records import Chunk, ParsedDocument, indexed_text
from rag.settings import Settings
from rag.store import STORES, chunk_text_hash
from rag.store.manifest import Manifest
from rag.store.migrate import export_kb, migrate_kb

REPO = Path(__file__).resolve().parents[1]

BACKENDS = backend_params("faiss", "pgvector")


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, fake_settings: Settings) -> Settings:
    settings = fake_settings.model_copy(deep=True)
    settings.store.backend = request.param
    if request.param == "pgvector":
        settings.store.url = request.getfixturevalue("pg_url")
    return settings


@pytest.fixture
def kb_name() -> str:
    return f"kb-{uuid.uuid4().hex[:8]}"


def open_store(settings: Settings, name: str, *, create: bool = False) -> Store:
    return STORES.create(settings.store.backend).open(settings, name, embedder_id="fake", dim=64, create=create)


@pytest.fixture
def store(backend_settings: Settings, kb_name: str) -> Iterator[Store]:
    st = open_store(backend_settings, kb_name, create=True)
    yield st
    st.close()
    STORES.create(backend_settings.store.backend).drop(backend_settings, kb_name)


def with_headers(doc: ParsedDocument, chunks: list[Chunk]) -> tuple[ParsedDocument, list[Chunk]]:
    """Contextual headers, which are embedded but not stored: the queue must keep the embedding input."""
    for c in chunks:
        c.context = f"{doc.title} · {c.section}"
    return doc, chunks


def keys_of(chunks: list[Chunk]) -> list[str]:
    return list(dict.fromkeys(chunk_text_hash(indexed_text(c)) for c in chunks))


def embed_all(store: Store, batch: int = 1000) -> int:
    """What an embedding worker does: drain the queue through the fake embedder."""
    stored = 0
    while queued := store.pending_embeddings(batch):
        stored += store.add_embeddings([k for k, _ in queued], FakeEmbedder().embed_documents([t for _, t in queued]))
    return stored


def query(text: str) -> np.ndarray:
    return FakeEmbedder().embed_query(text)


def test_deferred_add_is_keyword_searchable_then_dense_after_add_embeddings(store: Store) -> None:
    assert store.defers_embedding is True
    zh_doc, zh = with_headers(*make_doc("zh.pdf", ZH_PAGES))
    en_doc, en = with_headers(*make_doc("en.pdf", EN_PAGES))
    info = store.add_document(zh_doc, zh, None)
    store.add_document(en_doc, en, None)
    n = len(zh) + len(en)
    assert info.chunks == len(zh)
    assert store.keyword_search("营业收入", 3)[0].chunk.doc_id == info.id  # searchable at once
    assert store.dense_search(query("营业收入为128.5亿元"), 5) == []  # nothing embedded yet
    assert store.embedding_counts() == (0, n)
    stats = store.stats()
    assert (stats["embedded"], stats["pending"], stats["chunks"]) == (0, n, n)

    queued = store.pending_embeddings(100)
    assert [k for k, _ in queued] == keys_of(zh) + keys_of(en)  # write order
    assert [t for _, t in queued] == [indexed_text(c) for c in zh + en]  # header + text
    assert queued[0][1].startswith("zh · 第一节 公司简介\n")
    assert store.pending_embeddings(2) == queued[:2]

    with pytest.raises(InvalidRequest, match=r"vectors are 32-d, knowledge base .* holds 64-d"):
        store.add_embeddings([k for k, _ in queued], np.zeros((len(queued), 32), np.float32))
    with pytest.raises(InvalidRequest):
        store.add_embeddings([k for k, _ in queued], np.zeros((1, 64), np.float32))
    assert store.embedding_counts() == (0, n)  # a refused call stores nothing

    first = queued[: len(zh)]
    vectors = FakeEmbedder().embed_documents([t for _, t in first])
    assert store.add_embeddings([k for k, _ in first], vectors) == len(zh)
    assert store.embedding_counts() == (len(zh), n)
    assert store.pending_embeddings(100) == queued[len(zh) :]
    hits = store.dense_search(query(indexed_text(zh[1])), 3)
    assert hits[0].chunk.id == zh[1].id and {h.chunk.doc_id for h in hits} == {info.id}  # en not embedded yet
    assert store.add_embeddings([k for k, _ in first], vectors) == 0  # no longer queued: ignored

    assert embed_all(store) == len(en)
    assert store.embedding_counts() == (n, n) and store.pending_embeddings(10) == []
    assert store.dense_search(query(indexed_text(en[0])), 1)[0].chunk.id == en[0].id
    stats = store.stats()
    assert (stats["embedded"], stats["pending"]) == (n, 0)
    assert store.add_embeddings([], np.zeros((0, 64), np.float32)) == 0


def test_another_store_object_sees_the_vectors(backend_settings: Settings, kb_name: str) -> None:
    """A second process (here a second open of the KB) sees chunks at once and vectors on its next search."""
    writer = open_store(backend_settings, kb_name, create=True)
    reader = open_store(backend_settings, kb_name)
    try:
        doc, chunks = make_doc("en.pdf", EN_PAGES)
        writer.add_document(doc, chunks, None)
        q = query(chunks[1].text)
        assert reader.keyword_search("revenue", 3) and reader.dense_search(q, 3) == []
        assert reader.embedding_counts() == (0, len(chunks))
        assert embed_all(writer) == len(chunks)
        assert reader.dense_search(q, 1)[0].chunk.id == chunks[1].id
        assert reader.embedding_counts() == (len(chunks), len(chunks)) and reader.pending_embeddings(5) == []
        assert embed_all(reader) == 0
    finally:
        reader.close()
        writer.close()
        STORES.create(backend_settings.store.backend).drop(backend_settings, kb_name)


def test_text_embedded_already_is_dense_searchable_at_once(store: Store) -> None:
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    store.add_document(doc, chunks, FakeEmbedder().embed_documents([c.text for c in chunks]))
    copy_doc, copy = make_doc("copy.pdf", EN_PAGES, version="2")  # other file, same chunk texts
    store.add_document(copy_doc, copy, None)
    assert store.pending_embeddings(10) == []
    assert store.embedding_counts() == (2 * len(chunks), 2 * len(chunks))
    found = {h.chunk.doc_id for h in store.dense_search(query(chunks[1].text), 2)}
    assert found == {chunks[0].doc_id, copy[0].doc_id}

    # The other way round: texts queued by one document, then written with vectors by another.
    queued_doc, queued = make_doc("zh.pdf", ZH_PAGES)
    store.add_document(queued_doc, queued, None)
    assert len(store.pending_embeddings(10)) == len(queued)
    with_vectors_doc, with_vectors = make_doc("zh2.pdf", ZH_PAGES, version="2")
    store.add_document(with_vectors_doc, with_vectors, FakeEmbedder().embed_documents([c.text for c in with_vectors]))
    assert store.pending_embeddings(10) == []
    total = 2 * len(chunks) + 2 * len(queued)
    assert store.embedding_counts() == (total, total)
    hits = store.dense_search(query(queued[1].text), 2)
    assert {h.chunk.doc_id for h in hits} == {queued[0].doc_id, with_vectors[0].doc_id}


def test_removing_or_replacing_a_document_drops_its_queue(store: Store) -> None:
    zh_doc, zh = make_doc("zh.pdf", ZH_PAGES)
    en_doc, en = make_doc("en.pdf", EN_PAGES)
    zh_info = store.add_document(zh_doc, zh, None)
    en_info = store.add_document(en_doc, en, None)
    store.remove_document(zh_info.id)
    assert [k for k, _ in store.pending_embeddings(100)] == keys_of(en)
    assert store.embedding_counts() == (0, len(en))
    # A new version of en.pdf: the texts it no longer has leave the queue, the ones it keeps stay.
    new_doc, new = make_doc("en.pdf", [EN_PAGES[0], OTHER_PAGES[1]], version="v2")
    store.add_document(new_doc, new, None, replaces=en_info.id)
    assert [k for k, _ in store.pending_embeddings(100)] == keys_of(en[:2]) + keys_of(new[2:])
    assert store.add_embeddings(keys_of(en[2:]), FakeEmbedder().embed_documents([c.text for c in en[2:]])) == 0
    assert embed_all(store) == len(new)
    assert store.embedding_counts() == (len(new), len(new))


def test_the_queue_survives_reopening(backend_settings: Settings, kb_name: str) -> None:
    st = open_store(backend_settings, kb_name, create=True)
    doc, chunks = with_headers(*make_doc("zh.pdf", ZH_PAGES))
    st.add_document(doc, chunks, None)
    before = st.pending_embeddings(100)
    st.close()
    st = open_store(backend_settings, kb_name)
    try:
        assert st.pending_embeddings(100) == before and st.embedding_counts() == (0, len(chunks))
        assert embed_all(st) == len(chunks)
        st.close()
        st = open_store(backend_settings, kb_name)  # faiss: loads the saved index, reconciles against SQLite
        assert st.embedding_counts() == (len(chunks), len(chunks)) and st.pending_embeddings(5) == []
        assert st.dense_search(query(indexed_text(chunks[2])), 1)[0].chunk.id == chunks[2].id
    finally:
        st.close()
        STORES.create(backend_settings.store.backend).drop(backend_settings, kb_name)


_KILL_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from conftest import FakeEmbedder
    from rag.settings import Settings
    from rag.store import STORES
    from test_store_pending import big_doc
    settings = Settings.model_validate(json.loads(sys.argv[1]))
    store = STORES.create(settings.store.backend).open(settings, sys.argv[2], embedder_id="fake", dim=64, create=False)
    store.add_document(*big_doc(), None)
    print("queued", flush=True)
    while queued := store.pending_embeddings(50):
        store.add_embeddings([k for k, _ in queued], FakeEmbedder().embed_documents([t for _, t in queued]))
        print("embedded", flush=True)
    print("done", flush=True)
    """
)


def big_doc() -> tuple[ParsedDocument, list[Chunk]]:
    pages = ["Item %d. Section\n\n" % i + " ".join("word%d" % (i * 50 + j) for j in range(40)) for i in range(600)]
    return make_doc("big.pdf", pages)


def test_kill_while_embedding_leaves_every_chunk_embedded_or_queued(
    backend_settings: Settings, kb_name: str, tmp_path: Path
) -> None:
    """SIGKILL while add_embeddings batches run: each chunk is embedded or still queued, and a rerun finishes."""
    open_store(backend_settings, kb_name, create=True).close()
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(repo=str(REPO), tests=str(REPO / "tests")))
    proc = subprocess.Popen(
        [sys.executable, str(script), json.dumps(backend_settings.model_dump(mode="json")), kb_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "queued", proc.stderr.read() if proc.stderr else ""
    assert proc.stdout.readline().strip() == "embedded"
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    _, chunks = big_doc()
    st = open_store(backend_settings, kb_name)
    try:
        embedded, total = st.embedding_counts()
        queued = {k for k, _ in st.pending_embeddings(10_000)}
        with_vector = {c.id for batch, _ in st.iter_vectors() for c in batch}
        print(f"killed at {embedded} of {total} embedded")
        assert total == len(chunks) and 0 < embedded and len(with_vector) == embedded
        for c in chunks:  # exactly one of the two
            assert (c.id in with_vector) != (chunk_text_hash(indexed_text(c)) in queued), c.id
        if backend_settings.store.backend == "faiss":
            assert st._dense.index.live == embedded  # type: ignore[attr-defined]  # the index holds exactly those
        embed_all(st)
        assert st.embedding_counts() == (total, total)
        assert st.dense_search(query(chunks[7].text), 1)[0].chunk.id == chunks[7].id
    finally:
        st.close()
        STORES.create(backend_settings.store.backend).drop(backend_settings, kb_name)


def test_export_and_migrate_refuse_a_kb_still_embedding(store: Store, fake_settings: Settings, tmp_path: Path) -> None:
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    store.add_document(doc, chunks, None)
    target = open_store(fake_settings, "target", create=True)
    try:
        for attempt, doing in (
            (lambda: export_kb(store, tmp_path / "kb.export"), "exporting"),
            (lambda: migrate_kb(store, target), "migrating"),
        ):
            with pytest.raises(EmbeddingsPending, match=f"{len(chunks)} chunks .* still waiting .* before {doing}"):
                attempt()
        assert not (tmp_path / "kb.export").exists() and target.list_documents() == []
        embed_all(store)
        assert export_kb(store, tmp_path / "kb.export")["chunks"] == len(chunks)
        assert migrate_kb(store, target)["chunks"] == len(chunks)
        assert target.embedding_counts() == (len(chunks), len(chunks))
    finally:
        target.close()


def test_faiss_index_holds_only_embedded_chunks(fake_settings: Settings) -> None:
    """The FAISS cache diffs embedded rowids only: queued chunks are not "missing" from it, so opening or syncing
    a KB with many of them neither re-adds nor rebuilds anything."""
    st = open_store(fake_settings, "big", create=True)
    st.add_document(*big_doc(), None)  # 1,200 queued chunks (over the reconcile's start-over size)
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    st.add_document(doc, chunks, FakeEmbedder().embed_documents([c.text for c in chunks]))
    dense = st._dense  # type: ignore[attr-defined]
    assert dense.index.live == len(chunks)
    index = dense.index
    other = open_store(fake_settings, "big")  # another process writing
    other.add_document(*make_doc("zh.pdf", ZH_PAGES), None)
    st.dense_search(query("revenue"), 3)  # syncs: an incremental reconcile, not a fresh index
    assert dense.index is index and dense.index.live == len(chunks)
    other.close()
    st.close()
    with closing(sqlite3.connect(str(Path(fake_settings.paths.home) / "big" / "kb.sqlite"))) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pending_embeddings").fetchone()[0] == 1200 + len(ZH_PAGES) * 2


def test_existing_faiss_kb_gains_the_queue_on_open(fake_settings: Settings) -> None:
    """A KB made before deferred embedding (no pending_embeddings table) opens and queues without a migration step."""
    st = open_store(fake_settings, "old", create=True)
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    st.add_document(doc, chunks, FakeEmbedder().embed_documents([c.text for c in chunks]))
    st.close()
    with closing(sqlite3.connect(str(Path(fake_settings.paths.home) / "old" / "kb.sqlite"))) as conn:
        conn.execute("DROP TABLE pending_embeddings")
    st = open_store(fake_settings, "old")
    try:
        assert st.embedding_counts() == (len(chunks), len(chunks))
        st.add_document(*make_doc("zh.pdf", ZH_PAGES), None)
        assert len(st.pending_embeddings(10)) == 4 and st.dense_search(query("revenue"), 1)
    finally:
        st.close()


def test_milvus_does_not_defer_embedding() -> None:
    """Checked without a server: the refusals come before any Milvus call."""
    from rag.store.milvus import MilvusStore

    manifest = Manifest.for_new_kb("m", "milvus", "fake", 64, {}, {})
    st = MilvusStore(None, "/nonexistent/milvus.db", "m", "kb_m", manifest)  # type: ignore[arg-type]
    assert MilvusStore.defers_embedding is False and st.defers_embedding is False
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    with pytest.raises(InvalidRequest, match="embed before add_document"):
        st.add_document(doc, chunks, None)
    assert st.pending_embeddings(10) == []
    assert st.add_embeddings([], np.zeros((0, 64), np.float32)) == 0
    with pytest.raises(InvalidRequest):
        st.add_embeddings(["k"], np.zeros((1, 64), np.float32))


@pytest.mark.scale
@pytest.mark.skipif(not have_pgserver(), reason="pip install pgserver 'psycopg[binary,pool]'")
def test_pgvector_kb_of_schema_version_1_is_migrated_on_open(pg_url: str, fake_settings: Settings) -> None:  # noqa: F811
    """KB migration 2 (embedding NULLable, embed_text) is applied to a KB made before it, keeping its rows."""
    settings = fake_settings.model_copy(deep=True)
    settings.store.backend, settings.store.url = "pgvector", pg_url
    st = open_store(settings, "v1", create=True)
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    st.add_document(doc, chunks, FakeEmbedder().embed_documents([c.text for c in chunks]))
    with st._tx() as conn:  # type: ignore[attr-defined]  # back to what migration 1 made
        for statement in (
            "DROP INDEX {s}.chunks_pending",
            "ALTER TABLE {s}.chunks DROP COLUMN embed_text",
            "ALTER TABLE {s}.chunks ALTER COLUMN embedding SET NOT NULL",
            "DELETE FROM {s}.migrations WHERE version = 2",
        ):
            conn.execute(st._sql(statement))  # type: ignore[attr-defined]
    st.close()
    st = open_store(settings, "v1")
    try:
        assert st.embedding_counts() == (len(chunks), len(chunks))
        zh_doc, zh = make_doc("zh.pdf", ZH_PAGES)
        st.add_document(zh_doc, zh, None)
        assert len(st.pending_embeddings(10)) == len(zh) and embed_all(st) == len(zh)
        assert st.dense_search(query(zh[1].text), 1)[0].chunk.id == zh[1].id
        assert st.dense_search(query(chunks[1].text), 1)[0].chunk.id == chunks[1].id
    finally:
        st.close()
        STORES.create("pgvector").drop(settings, "v1")
