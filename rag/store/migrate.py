"""Move a knowledge base between store backends without re-embedding.

    export_kb(store, path)                        -> a portable SQLite file (documents, pages, chunks, vectors)
    import_kb(settings, name, path, backend=, url=) -> a new (or resumed) KB on any backend
    migrate_kb(src, dst)                          -> copy store to store directly
    migrate_to(settings, name, backend, url)      -> open the source and a matching target, then migrate_kb

The export file is one SQLite database (tables `meta`, `documents`, `pages`, `chunks`; vectors as
float32 blobs), readable anywhere without citeqa. Copies are resumable: a document whose sha256 is
already in the target is skipped, so re-running after an interruption finishes the job. Each
document lands in the target through `Store.add_document`, so the target's own atomicity applies.
A KB with chunks still queued to embed (deferred embedding) is refused with EmbeddingsPending (409)
saying how many: the copy carries vectors, so embed first (`citeqa kb embed NAME`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.chunking.context import apply_headers
from rag.errors import EmbeddingsPending, InvalidRequest, KnowledgeBaseError
from rag.records import Chunk, DocumentInfo, Page, ParsedDocument
from rag.store.private import touch_private

if TYPE_CHECKING:
    from rag.protocols import Store
    from rag.settings import Settings

FORMAT = "citeqa-kb-export"
FORMAT_VERSION = 1
Progress = Callable[[int, int], None]  # (documents done, documents in total)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL, sha256 TEXT NOT NULL,
    added_at REAL NOT NULL, metadata TEXT NOT NULL, paths TEXT NOT NULL
);
CREATE TABLE pages (doc_id TEXT NOT NULL, number INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (doc_id, number));
CREATE TABLE chunks (
    id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    page_start INTEGER NOT NULL, page_end INTEGER NOT NULL, char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
    section TEXT NOT NULL, token_count INTEGER NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX chunks_doc ON chunks (doc_id, ordinal);
"""


@dataclass(slots=True)
class _Item:
    """One document as it travels: what add_document needs plus its extra paths."""

    doc: ParsedDocument
    chunks: list[Chunk]
    vectors: np.ndarray
    paths: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading a store
def _pages_of(store: Store, info: DocumentInfo) -> list[Page]:
    return [Page(number=n, text=t) for n, t in store.document_pages(info.id)]


def _metadata_of(store: Store, doc_id: str) -> dict[str, Any]:
    return dict(store.document_metadata(doc_id))


def _chunk_groups(store: Store) -> Iterator[tuple[str, list[Chunk], np.ndarray]]:
    """(doc_id, chunks in order, vectors) per document, from the store's `iter_vectors()`."""
    current: str | None = None
    chunks: list[Chunk] = []
    vecs: list[np.ndarray] = []
    seen: set[str] = set()
    for batch_chunks, batch_vecs in store.iter_vectors():
        for chunk, vec in zip(batch_chunks, batch_vecs):
            if chunk.doc_id != current:
                if current is not None:
                    yield current, chunks, np.stack(vecs)
                if chunk.doc_id in seen:
                    raise KnowledgeBaseError(f"{store.name!r}: chunks of document {chunk.doc_id!r} are not contiguous")
                seen.add(chunk.doc_id)
                current, chunks, vecs = chunk.doc_id, [], []
            chunks.append(chunk)
            vecs.append(np.asarray(vec, dtype=np.float32))
    if current is not None:
        yield current, chunks, np.stack(vecs)


def embeddings_pending(store: Store, queued: int, doing: str) -> EmbeddingsPending:
    return EmbeddingsPending(
        f"{queued} chunks of knowledge base {store.name!r} are still waiting to be embedded; run "
        f"`citeqa kb embed {store.name}` (or wait for the ingest or the server to finish) before {doing}"
    )


def require_embedded(store: Store, doing: str) -> None:
    """Refuse to copy a KB with chunks still queued to embed (deferred embedding): the copy carries vectors, and
    a chunk without one would be lost (iter_vectors leaves it out) or need a queue the target may not have."""
    embedded, total = store.embedding_counts()
    if embedded < total:
        raise embeddings_pending(store, total - embedded, doing)


def _items_from_store(store: Store, doing: str) -> tuple[int, Iterator[_Item]]:
    require_embedded(store, doing)
    infos = {d.id: d for d in store.list_documents()}

    def items() -> Iterator[_Item]:
        pending = dict(infos)
        for doc_id, chunks, vectors in _chunk_groups(store):
            info = pending.pop(doc_id, None)
            if info is None:  # chunks of a document removed meanwhile
                continue
            if len(chunks) < info.chunks:  # re-queued since the check (another process rewrote it)
                raise embeddings_pending(store, info.chunks - len(chunks), doing)
            yield _item(
                store,
                info,
                sorted(chunks, key=lambda c: c.ordinal),
                vectors[np.argsort([c.ordinal for c in chunks], kind="stable")],
            )
        for info in pending.values():  # documents without chunks
            if info.chunks:
                raise embeddings_pending(store, info.chunks, doing)
            yield _item(store, info, [], np.zeros((0, store.dim), dtype=np.float32))

    return len(infos), items()


def _item(store: Store, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> _Item:
    metadata = _metadata_of(store, info.id)
    if not chunks:
        metadata.setdefault("doc_id", info.id)
    doc = ParsedDocument(
        source=info.source, sha256=info.sha256, title=info.title, pages=_pages_of(store, info), metadata=metadata
    )
    return _Item(doc=doc, chunks=chunks, vectors=vectors, paths=[p for p in info.paths if p != info.source])


# --------------------------------------------------------------------------- writing a store
def _copy(
    items: Iterator[_Item], total: int, dst: Store, on_progress: Progress | None, *, headers: bool
) -> dict[str, Any]:
    """Write `items` into `dst`. `headers`: the chunks were indexed with contextual headers, which are not
    stored, so they are rebuilt from the document (deterministic) for the target's keyword index."""
    started = time.perf_counter()
    copied = skipped = chunks = 0
    for n, item in enumerate(items, start=1):
        if dst.find_by_sha(item.doc.sha256) is not None:
            skipped += 1  # already there: a resumed migration
        else:
            if headers:
                apply_headers(item.doc, item.chunks)
            dst.add_document(item.doc, item.chunks, item.vectors)
            copied += 1
            chunks += len(item.chunks)
        info = dst.find_by_sha(item.doc.sha256)
        if info is not None:
            for path in item.paths:
                if path not in info.paths:
                    dst.add_path(info.id, path)
        if on_progress is not None:
            on_progress(n, total)
    return {
        "documents": copied,
        "skipped": skipped,
        "chunks": chunks,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _check_compatible(src_embedder: str, src_dim: int, dst: Store) -> None:
    if dst.embedder_id != src_embedder or int(dst.dim) != int(src_dim):
        from rag.errors import EmbedderMismatch

        raise EmbedderMismatch(
            f"cannot copy vectors of {src_embedder!r} ({src_dim}-d) into knowledge base {dst.name!r}, "
            f"which holds {dst.embedder_id!r} ({dst.dim}-d)"
        )


def migrate_kb(src: Store, dst: Store, on_progress: Progress | None = None) -> dict[str, Any]:
    """Copy every document (pages, chunks, stored vectors, paths) of `src` into `dst`; no re-embedding.

    Returns {"documents", "skipped", "chunks", "seconds"}; documents already in `dst` (same sha256)
    are skipped, so an interrupted migration can simply be run again.
    """
    _check_compatible(src.embedder_id, src.dim, dst)
    total, items = _items_from_store(src, "migrating")
    return _copy(items, total, dst, on_progress, headers=bool(src.manifest.chunker.get("headers")))


def open_target(
    settings: Settings, name: str, like: Store, *, backend: str | None = None, url: str | None = None
) -> Store:
    """Open (creating if missing) KB `name` on `backend`/`url` for `like`'s embedder id and dim."""
    from rag.kb import validate_kb_name
    from rag.store import STORES

    validate_kb_name(name)
    target = settings.model_copy(deep=True)
    if backend is not None:
        target.store.backend = backend
    if url is not None:
        target.store.url = url
    return STORES.create(target.store.backend).open(
        target, name, embedder_id=like.embedder_id, dim=like.dim, create=True
    )


def migrate_to(
    settings: Settings,
    name: str,
    backend: str,
    url: str | None = None,
    *,
    target_name: str | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Copy KB `name` from the configured backend to `backend`/`url` (as `target_name`, default `name`)."""
    from rag.kb import open_kb

    if (
        backend == settings.store.backend
        and (url or None) == (settings.store.url or None)
        and (target_name or name) == name
    ):
        raise InvalidRequest(
            f"knowledge base {name!r} is already on {backend}; name another backend, URL or target name"
        )
    src = open_kb(settings, name)
    try:
        dst = open_target(settings, target_name or name, src, backend=backend, url=url)
        try:
            result = migrate_kb(src, dst, on_progress)
            result["target"] = {"backend": backend, "name": target_name or name, "stats": dst.stats()}
            return result
        finally:
            dst.close()
    finally:
        src.close()


# --------------------------------------------------------------------------- the portable file
def export_kb(store: Store, path: str | Path, on_progress: Progress | None = None) -> dict[str, Any]:
    """Write `store` to a new portable SQLite file at `path`; returns {"documents", "chunks", "bytes", "seconds"}."""
    path = Path(path)
    if path.exists():
        raise InvalidRequest(f"{path}: already exists; export writes a new file")
    require_embedded(store, "exporting")  # before the file exists
    started = time.perf_counter()
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    touch_private(tmp)  # every chunk's text is in it: 0600 like the knowledge base itself
    conn = sqlite3.connect(str(tmp))
    try:
        conn.executescript(_SCHEMA)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": store.name,
            "embedder": store.embedder_id,
            "dim": store.dim,
            "chunker": store.manifest.chunker,
            "source_backend": store.backend,
            "exported_at": time.time(),
        }
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        total, items = _items_from_store(store, "exporting")
        docs = chunks = 0
        for n, item in enumerate(items, start=1):
            d = item.doc
            doc_id = item.chunks[0].doc_id if item.chunks else str(d.metadata.get("doc_id"))
            conn.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    doc_id,
                    d.source,
                    d.title,
                    d.sha256,
                    time.time(),
                    json.dumps(d.metadata, ensure_ascii=False, default=str),
                    json.dumps(item.paths),
                ),
            )
            conn.executemany("INSERT INTO pages VALUES (?, ?, ?)", [(doc_id, p.number, p.text) for p in d.pages])
            conn.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c.id,
                        doc_id,
                        c.ordinal,
                        c.text,
                        c.page_start,
                        c.page_end,
                        c.char_start,
                        c.char_end,
                        c.section,
                        c.token_count,
                        np.asarray(v, dtype=np.float32).tobytes(),
                    )
                    for c, v in zip(item.chunks, item.vectors)
                ],
            )
            docs += 1
            chunks += len(item.chunks)
            if on_progress is not None:
                on_progress(n, total)
        conn.commit()
    finally:
        conn.close()
    tmp.replace(path)  # the file appears complete or not at all
    return {
        "documents": docs,
        "chunks": chunks,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def read_export_meta(path: str | Path) -> dict[str, Any]:
    """The export's header: format, version, name, embedder, dim, chunker, source_backend."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such export file")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        raise InvalidRequest(f"{path}: not a citeqa knowledge-base export ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise InvalidRequest(f"{path}: not a citeqa knowledge-base export")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise InvalidRequest(
            f"{path}: export format {meta['version']} is newer than this citeqa reads ({FORMAT_VERSION})"
        )
    return meta


def _items_from_file(path: Path, dim: int) -> tuple[int, Iterator[_Item]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    total = int(conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def items() -> Iterator[_Item]:
        try:
            for doc_id, source, title, sha, _added, metadata, paths in conn.execute(
                "SELECT * FROM documents ORDER BY rowid"
            ).fetchall():
                pages = [
                    Page(number=n, text=t)
                    for n, t in conn.execute("SELECT number, text FROM pages WHERE doc_id=? ORDER BY number", (doc_id,))
                ]
                rows = conn.execute(
                    "SELECT id, ordinal, text, page_start, page_end, char_start, char_end, section, token_count, vector "
                    "FROM chunks WHERE doc_id=? ORDER BY ordinal",
                    (doc_id,),
                ).fetchall()
                chunks = [
                    Chunk(
                        id=r[0],
                        doc_id=doc_id,
                        ordinal=r[1],
                        text=r[2],
                        page_start=r[3],
                        page_end=r[4],
                        char_start=r[5],
                        char_end=r[6],
                        section=r[7],
                        token_count=r[8],
                    )
                    for r in rows
                ]
                vectors = np.frombuffer(b"".join(r[9] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                meta = json.loads(metadata)
                if not chunks:
                    meta.setdefault("doc_id", doc_id)
                doc = ParsedDocument(source=source, sha256=sha, title=title, pages=pages, metadata=meta)
                yield _Item(doc=doc, chunks=chunks, vectors=vectors, paths=list(json.loads(paths)))
        finally:
            conn.close()

    return total, items()


def import_kb(
    settings: Settings,
    name: str,
    path: str | Path,
    *,
    backend: str | None = None,
    url: str | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Create (or resume filling) KB `name` from an export file, on `backend`/`url` (default: settings).

    The KB is created with the export's embedder id and dim — nothing is embedded, no model is
    loaded; an existing KB with another embedder raises EmbedderMismatch.
    """
    from rag.kb import validate_kb_name
    from rag.store import STORES

    validate_kb_name(name)
    path = Path(path)
    meta = read_export_meta(path)
    target = settings.model_copy(deep=True)
    if backend is not None:
        target.store.backend = backend
    if url is not None:
        target.store.url = url
    dst = STORES.create(target.store.backend).open(
        target, name, embedder_id=str(meta["embedder"]), dim=int(meta["dim"]), create=True
    )
    try:
        total, items = _items_from_file(path, int(meta["dim"]))
        result = _copy(items, total, dst, on_progress, headers=bool((meta.get("chunker") or {}).get("headers")))
        result["backend"] = target.store.backend
        result["embedder"] = meta["embedder"]
        return result
    finally:
        dst.close()
