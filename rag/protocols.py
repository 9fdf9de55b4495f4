"""One Protocol per stage. Backends are chosen by name from registries (rag/registry.py).

Parser -> Chunker -> Embedder -> Store -> Retriever -> Generator. Every backend of a stage
satisfies the same Protocol, so tests run one contract suite against each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rag.records import Chunk, DocumentInfo, Hit, ParsedDocument

if TYPE_CHECKING:
    from rag.store.manifest import Manifest


@runtime_checkable
class Parser(Protocol):
    """Turns one file into a ParsedDocument; raises rag.errors.ParseError subclasses on bad input."""

    def parse(self, path: Path, *, password: str | None = None) -> ParsedDocument: ...


@runtime_checkable
class Chunker(Protocol):
    """Splits a parsed document into chunks that keep page numbers and char offsets."""

    def chunk(self, doc: ParsedDocument, doc_id: str) -> list[Chunk]: ...


@runtime_checkable
class Embedder(Protocol):
    """Text -> L2-normalised float32 vectors. `id` names the model exactly (it goes in the manifest)."""

    id: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass(slots=True)
class SearchFilter:
    """Restricts a search. Empty means everything."""

    doc_ids: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # equality on document metadata keys

    def __bool__(self) -> bool:
        return bool(self.doc_ids or self.metadata)


@runtime_checkable
class Store(Protocol):
    """A knowledge base: documents, chunks, vectors, keyword index and ingestion state.

    The source of truth is durable and transactional (SQLite for `faiss`); derived indexes can be
    rebuilt from it without re-embedding. Every write is atomic: a crash leaves the old state or the new.
    Shared behaviour (write validation, errors, stats shape) lives in rag/store/common.py.
    """

    name: str
    backend: str  # the registry name: "faiss", "pgvector", "milvus"
    path: Path | None
    embedder_id: str
    dim: int
    manifest: Manifest  # embedder, dim, chunker settings and index parameters recorded at creation
    defers_embedding: bool  # class attribute: True when add_document accepts vectors=None (embed later)

    # --- documents -------------------------------------------------------------------------
    def find_by_sha(self, sha256: str) -> DocumentInfo | None: ...

    def find_by_path(self, path: str) -> DocumentInfo | None: ...

    def add_document(
        self,
        doc: ParsedDocument,
        chunks: list[Chunk],
        vectors: np.ndarray | None,
        *,
        replaces: str | None = None,
    ) -> DocumentInfo:
        """Store a document, its pages, chunks and vectors in one transaction.

        `replaces` is the id of a previous version (same path, changed content) removed in the
        same transaction. Chunk ids / doc_id in `chunks` are already set by the caller.

        `vectors=None` (only where `defers_embedding`): the chunks are keyword-searchable at once; a chunk
        whose embedding key (chunk_text_hash(indexed_text(c))) already has a stored vector uses it, every
        other key is queued in the store, in the same transaction, with its embedding input indexed_text(c).
        """
        ...

    def add_path(self, doc_id: str, path: str) -> None:
        """Record that the same content also lives at `path` (dedup by sha256)."""
        ...

    def remove_path(self, path: str) -> None:
        """Forget one path; the document itself stays (remove_document removes it)."""
        ...

    def remove_document(self, doc_id: str) -> None: ...

    def list_documents(self) -> list[DocumentInfo]: ...

    def get_document(self, doc_id: str) -> DocumentInfo: ...

    def page_text(self, doc_id: str, page: int) -> str:
        """The full text of one page as parsed (what citations quote from)."""
        ...

    def document_pages(self, doc_id: str) -> list[tuple[int, str]]:
        """(page number, text) of every stored page of a document, in page order."""
        ...

    def document_metadata(self, doc_id: str) -> dict[str, Any]:
        """The metadata the document was added with (ParsedDocument.metadata)."""
        ...

    # --- embedding cache -------------------------------------------------------------------
    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already stored for chunk texts with these sha256 hashes (re-chunk without re-embed)."""
        ...

    # --- deferred embedding (the queue lives in the store: it survives kill -9 and restarts) ------
    def pending_embeddings(self, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` (key, embedding input) pairs still to embed, oldest first (the order they were queued)."""
        ...

    def add_embeddings(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors for the keys still queued and dequeue them, in one transaction; returns how many keys
        were stored. Keys no longer queued (their document removed, or embedded by another process) are
        ignored. Every reader (this or another process) sees the vectors on its next search."""
        ...

    def embedding_counts(self) -> tuple[int, int]:
        """(chunks that have a vector, all chunks); cheap enough to poll every few seconds."""
        ...

    # --- search ----------------------------------------------------------------------------
    def dense_search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[Hit]: ...

    def keyword_search(self, query: str, k: int, flt: SearchFilter | None = None) -> list[Hit]: ...

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]: ...

    def neighbours(self, chunk: Chunk, n: int) -> list[Chunk]:
        """Up to `n` chunks before and after `chunk` in the same document, in order."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Reads in this block (this thread) see one consistent version of the KB, where the engine can
        give one (pgvector); elsewhere a no-op. A hybrid search runs its dense and keyword queries inside."""
        ...

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        """Every chunk that has a vector, with it, in batches; each document's chunks contiguous (export, migration).
        Chunks still queued to embed are left out (rag.store.migrate refuses a KB that has any)."""
        ...

    # --- housekeeping ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """At least {"documents", "chunks", "embedded", "pending", "embedder", "dim", "backend"}."""
        ...

    def rebuild_indexes(self) -> None:
        """Rebuild derived indexes (dense, keyword) from the source of truth, without re-embedding."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Retrieval:
    """What a retriever found. `no_evidence` is set when the best hit is below the relevance floor."""

    hits: list[Hit]
    no_evidence: bool = False
    best_score: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    keyword_coverage: float = 0.0  # the best keyword hit's share of the question's content words
    languages: frozenset[str] = frozenset()  # "zh"/"en": the languages of all candidates, before the cut to k
    unembedded: int = 0  # chunks of the KB still waiting for a vector (found by keyword only)


@runtime_checkable
class Retriever(Protocol):
    def retrieve(self, query: str, k: int, flt: SearchFilter | None = None) -> Retrieval: ...


Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@runtime_checkable
class Generator(Protocol):
    """An LLM. `generate(..., stream=True)` yields text pieces as they are produced."""

    id: str
    context_tokens: int

    def generate(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_tokens: int | None = None,  # None: settings llm.max_answer_tokens / llm.temperature (rag.llm.sampling)
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str | Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...
