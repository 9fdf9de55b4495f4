"""What every store backend shares: write validation, the row -> Chunk mapper, doc ids, the embedding-cache
key, the metadata "any of" filter, "not in knowledge base" errors, connection caching and the stats shape.

No engine library is imported here, so backends stay optional (see rag/store/__init__.py).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from rag.errors import DocumentNotFound, InvalidRequest, KnowledgeBaseNotFound
from rag.records import Chunk, ParsedDocument, display_name

if TYPE_CHECKING:
    from rag.protocols import Store

# The columns every backend reads a chunk back with, in this order (SQL select lists, Milvus output fields).
CHUNK_FIELDS: tuple[str, ...] = (
    "id",
    "doc_id",
    "ordinal",
    "text",
    "page_start",
    "page_end",
    "char_start",
    "char_end",
    "section",
    "token_count",
    "source",
)


def chunk_text_hash(text: str) -> str:
    """The key of the embedding cache (`Store.cached_vectors`): sha256 of what is embedded, hex.

    Callers hash `rag.records.indexed_text(chunk)`: the chunk text with its contextual header, so the
    same text under another header (another document, section or table) gets its own vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def doc_id_of(doc: ParsedDocument, chunks: Sequence[Chunk]) -> str:
    """The caller sets doc ids on the chunks; a document without chunks takes metadata["doc_id"] or its sha."""
    if chunks:
        return chunks[0].doc_id
    return str(doc.metadata.get("doc_id") or doc.sha256[:16])


def _check_vectors(vectors: np.ndarray, rows: int, dim: int, kb: str, what: str) -> np.ndarray:
    """`vectors` as float32 of shape (rows, dim), else InvalidRequest naming `what` (a source, or the call)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    got = vectors.shape[0] if vectors.ndim == 2 else 0 if vectors.size == 0 else -1
    if rows != got:
        raise InvalidRequest(f"{what}: {rows} chunks but vectors of shape {vectors.shape}")
    if rows and vectors.shape[1] != dim:
        raise InvalidRequest(f"{what}: vectors are {vectors.shape[1]}-d, knowledge base {kb!r} holds {dim}-d")
    return vectors.reshape(rows, dim) if rows else np.zeros((0, dim), np.float32)


def validate_write(
    doc: ParsedDocument, chunks: Sequence[Chunk], vectors: np.ndarray | None, dim: int, kb: str
) -> tuple[str, np.ndarray | None]:
    """Check an `add_document` call before anything is written; returns (doc id, float32 vectors of shape (n, dim)),
    or (doc id, None) for a deferred-embedding write (`vectors=None`, see Store.defers_embedding).

    Every backend raises the same InvalidRequest (HTTP 400) for one vector per chunk missing, vectors of
    the wrong width, or chunks of several documents.
    """
    checked = None if vectors is None else _check_vectors(vectors, len(chunks), dim, kb, doc.source)
    doc_id = doc_id_of(doc, chunks)
    if any(c.doc_id != doc_id for c in chunks):
        raise InvalidRequest(f"{doc.source}: chunks belong to more than one document id")
    return doc_id, checked


def validate_embeddings(keys: Sequence[str], vectors: np.ndarray, dim: int, kb: str) -> dict[str, np.ndarray]:
    """Check an `add_embeddings` call (one `dim`-wide vector per key, as validate_write); returns key -> vector."""
    checked = _check_vectors(vectors, len(keys), dim, kb, "add_embeddings")
    return dict(zip(keys, checked))


def not_deferred(kb: str, backend: str) -> InvalidRequest:
    """add_document(vectors=None) on a backend whose rows need their vector (Store.defers_embedding False)."""
    return InvalidRequest(
        f"knowledge base {kb!r} ({backend}) stores a chunk only with its vector: embed before add_document"
    )


def chunk_from_row(row: Sequence[Any]) -> Chunk:
    """A chunk from values in CHUNK_FIELDS order (`source` becomes the display name)."""
    return Chunk(
        id=row[0],
        doc_id=row[1],
        ordinal=int(row[2]),
        text=row[3],
        page_start=int(row[4]),
        page_end=int(row[5]),
        char_start=int(row[6]),
        char_end=int(row[7]),
        section=row[8] or "",
        token_count=int(row[9] or 0),
        doc=display_name(row[10] or ""),
    )


def chunk_from_mapping(entity: Mapping[str, Any]) -> Chunk:
    """A chunk from a record keyed by CHUNK_FIELDS (missing section/token_count/source read as empty)."""
    return chunk_from_row([entity.get(f) for f in CHUNK_FIELDS])


def any_of(value: Any) -> list[Any]:
    """A metadata filter value as the list of values it accepts: a list means any of its items."""
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def metadata_matches(meta: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Equality per key, a list value meaning any of its items (what the SQL backends filter on)."""
    return all(meta.get(key) in any_of(value) for key, value in wanted.items())


def document_not_found(kb: str, doc_id: str) -> DocumentNotFound:
    return DocumentNotFound(f"document {doc_id!r} is not in knowledge base {kb!r}")


def page_not_found(kb: str, doc_id: str, page: int) -> DocumentNotFound:
    return DocumentNotFound(f"document {doc_id!r} has no page {page} in knowledge base {kb!r}")


def kb_not_found(name: str, where: str, known: Sequence[str]) -> KnowledgeBaseNotFound:
    return KnowledgeBaseNotFound(
        f"knowledge base {name!r} does not exist in {where} "
        f"(known: {', '.join(known) or 'none'}); ingest documents into it first"
    )


def store_stats(
    store: Store,
    *,
    documents: int,
    chunks: int,
    pages: int,
    index: dict[str, Any],
    keyword: str,
    disk_bytes: int,
    embedded: int,
    pending: int,
    **extra: Any,
) -> dict[str, Any]:
    """The one `Store.stats()` shape: these keys on every backend, then the backend's own extras.

    `embedded`: chunks that have a vector (dense-searchable); `pending`: distinct chunk texts queued to embed."""
    return {
        "name": store.name,
        "backend": store.backend,
        "documents": int(documents),
        "chunks": int(chunks),
        "pages": int(pages),
        "embedder": store.embedder_id,
        "dim": store.dim,
        "index": index,
        "keyword": keyword,
        "disk_bytes": int(disk_bytes),
        "embedded": int(embedded),
        "pending": int(pending),
        **extra,
    }


T = TypeVar("T")


class ConnectionCache(Generic[T]):
    """One shared connection object per key per process (a pool per PostgreSQL URL, a client per Milvus URI).

    `factory` runs under the lock, so threads opening the same KB at once share one connection.
    """

    def __init__(self, is_live: Callable[[T], bool] = lambda _: True) -> None:
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()
        self._is_live = is_live

    def get(self, key: str, factory: Callable[[], T]) -> T:
        with self._lock:
            item = self._items.get(key)
            if item is None or not self._is_live(item):
                item = factory()
                self._items[key] = item
            return item

    def pop(self, key: str) -> T | None:
        with self._lock:
            return self._items.pop(key, None)

    def drain(self) -> Iterator[T]:
        """Remove and yield every cached item (to close them)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        yield from items
