"""One knowledge base in PostgreSQL: documents, pages and chunks in the KB's own schema.

Every ingestion write is one transaction, so a crash leaves the old state or the new. Search is in
search.py (a mixin), the schema in migrations.py, connections in pool.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import KnowledgeBaseError
from rag.records import Chunk, DocumentInfo, ParsedDocument, indexed_text
from rag.store.common import (
    chunk_from_row,
    chunk_text_hash,
    document_not_found,
    page_not_found,
    store_stats,
    validate_write,
)
from rag.store.manifest import Manifest
from rag.store.pgvector.migrations import HNSW_EF_CONSTRUCTION, HNSW_INDEX, HNSW_M
from rag.store.pgvector.pool import redact
from rag.store.pgvector.queue import PgEmbeddingQueue
from rag.store.pgvector.search import CHUNK_COLUMNS, PgSearch, parse_vec, tsvector_literal, vec_text

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

BACKEND = "pgvector"
INDEX_PARAMS = {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


class PgvectorStore(PgSearch, PgEmbeddingQueue):
    """One knowledge base in PostgreSQL (see rag/store/pgvector/__init__.py for the layout)."""

    backend = BACKEND
    defers_embedding = True

    def __init__(self, pool: ConnectionPool, name: str, schema: str, manifest: Manifest, url: str) -> None:
        self.name = name
        self.path: Path | None = None
        self.url = url
        self.schema = schema
        self.manifest = manifest
        self.embedder_id = manifest.embedder
        self.dim = manifest.dim
        self._pool = pool
        self._closed = False
        self._local = threading.local()

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction (committed on success, rolled back on error).

        Inside `snapshot()` the thread's pinned connection is reused, so every read sees one snapshot.
        """
        if self._closed:
            raise KnowledgeBaseError(f"knowledge base {self.name!r} is closed")
        pinned = getattr(self._local, "conn", None)
        if pinned is not None:
            with pinned.transaction():  # a savepoint inside the snapshot's transaction
                yield pinned
            return
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this block (this thread) see one consistent database snapshot.

        A hybrid search runs a dense and a keyword query; without a snapshot a writer committing in
        between can make the two see different versions of a document. Nested calls are no-ops.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _sql(self, statement: str) -> str:
        return statement.replace("{s}", self.schema)

    # ------------------------------------------------------------------ documents
    def _info(self, conn: Connection, where: str, params: Sequence[Any]) -> list[DocumentInfo]:
        rows = conn.execute(
            self._sql(
                "SELECT d.id, d.source, d.title, d.sha256, d.pages, d.chunks, d.added_at, "
                "coalesce(array_agg(p.path ORDER BY p.path) FILTER (WHERE p.path IS NOT NULL), '{}') "
                f"FROM {{s}}.documents d LEFT JOIN {{s}}.doc_paths p ON p.doc_id = d.id WHERE {where} "
                "GROUP BY d.id ORDER BY d.source, d.id"
            ),
            params,
        ).fetchall()
        return [DocumentInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7])) for r in rows]

    def find_by_sha(self, sha256: str) -> DocumentInfo | None:
        with self._tx() as conn:
            found = self._info(conn, "d.sha256 = %s", (sha256,))
        return found[0] if found else None

    def find_by_path(self, path: str) -> DocumentInfo | None:
        with self._tx() as conn:
            found = self._info(conn, "d.id = (SELECT doc_id FROM {s}.doc_paths WHERE path = %s)", (path,))
        return found[0] if found else None

    def add_document(
        self,
        doc: ParsedDocument,
        chunks: list[Chunk],
        vectors: np.ndarray | None,
        *,
        replaces: str | None = None,
    ) -> DocumentInfo:
        """Store a document, its pages, chunks and vectors in one transaction (see Store).

        `vectors=None`: chunks go in with embedding NULL and their embedding input in embed_text (the queue);
        those whose text the KB has embedded already take that vector in the same transaction.
        """
        doc_id, vectors = validate_write(doc, chunks, vectors, self.dim, self.name)
        inputs = [indexed_text(c).replace("\x00", "") for c in chunks]
        hashes = [chunk_text_hash(indexed_text(c)) for c in chunks]
        tsvs = [tsvector_literal(t) for t in inputs]  # jieba before the transaction
        now = time.time()
        with self._tx() as conn:
            # Serialise writers of the same content (replicas ingesting the same file at once).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema + doc.sha256,))
            same = conn.execute(self._sql("SELECT id FROM {s}.documents WHERE sha256 = %s"), (doc.sha256,)).fetchone()
            if same is not None and same[0] not in (doc_id, replaces):
                # Same content already stored under another id: only record the new path (dedup).
                self._upsert_path(conn, doc.source, same[0])
                return self._info(conn, "d.id = %s", (same[0],))[0]
            kept: list[str] = []
            if same is not None and same[0] == doc_id:  # a re-chunk, or another writer that got here first
                rows = conn.execute(self._sql("SELECT path FROM {s}.doc_paths WHERE doc_id = %s"), (doc_id,))
                kept = [r[0] for r in rows]
            conn.execute(
                self._sql("DELETE FROM {s}.documents WHERE id = ANY(%s)"), ([x for x in {doc_id, replaces} if x],)
            )
            conn.execute(
                self._sql(
                    "INSERT INTO {s}.documents (id, source, title, sha256, pages, chunks, added_at, metadata) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ),
                (
                    doc_id,
                    doc.source,
                    doc.title,
                    doc.sha256,
                    len(doc.pages),
                    len(chunks),
                    now,
                    json.dumps(doc.metadata or {}, default=str),
                ),
            )
            for path in dict.fromkeys([doc.source, *kept]):  # the paths it had stay
                self._upsert_path(conn, path, doc_id)
            with conn.cursor() as cur:
                with cur.copy(self._sql("COPY {s}.pages (doc_id, number, text) FROM STDIN")) as cp:
                    for page in doc.pages:
                        cp.write_row((doc_id, page.number, page.text.replace("\x00", "")))
                with cur.copy(
                    self._sql(
                        "COPY {s}.chunks (id, doc_id, ordinal, text, page_start, page_end, char_start, char_end, "
                        "section, token_count, text_sha, tsv, embedding, embed_text) FROM STDIN"
                    )
                ) as cp:
                    for i, chunk in enumerate(chunks):
                        cp.write_row(
                            (
                                chunk.id,
                                doc_id,
                                chunk.ordinal if chunk.ordinal else i,
                                chunk.text.replace("\x00", ""),
                                chunk.page_start,
                                chunk.page_end,
                                chunk.char_start,
                                chunk.char_end,
                                chunk.section,
                                chunk.token_count,
                                hashes[i],
                                tsvs[i],
                                None if vectors is None else vec_text(vectors[i]),
                                inputs[i] if vectors is None else None,
                            )
                        )
            # The embedding cache, both ways: queued chunks of these texts (this document's, or another's
            # queued earlier) take a vector the KB holds for the same text.
            conn.execute(
                self._sql(
                    "UPDATE {s}.chunks c SET embed_text = NULL, embedding = (SELECT e.embedding FROM {s}.chunks e "
                    "WHERE e.text_sha = c.text_sha AND e.embedding IS NOT NULL LIMIT 1) "
                    "WHERE c.text_sha = ANY(%s) AND c.embedding IS NULL AND EXISTS "
                    "(SELECT 1 FROM {s}.chunks e WHERE e.text_sha = c.text_sha AND e.embedding IS NOT NULL)"
                ),
                (sorted(set(hashes)),),
            )
            found = self._info(conn, "d.id = %s", (doc_id,))
        return found[0]

    def _upsert_path(self, conn: Connection, path: str, doc_id: str) -> None:
        conn.execute(
            self._sql(
                "INSERT INTO {s}.doc_paths (path, doc_id) VALUES (%s, %s) "
                "ON CONFLICT (path) DO UPDATE SET doc_id = EXCLUDED.doc_id"
            ),
            (str(path), doc_id),
        )

    def add_path(self, doc_id: str, path: str) -> None:
        with self._tx() as conn:
            if conn.execute(self._sql("SELECT 1 FROM {s}.documents WHERE id = %s"), (doc_id,)).fetchone() is None:
                raise document_not_found(self.name, doc_id)
            self._upsert_path(conn, path, doc_id)

    def remove_path(self, path: str) -> None:
        """Forget one path; the document itself stays."""
        with self._tx() as conn:
            conn.execute(self._sql("DELETE FROM {s}.doc_paths WHERE path = %s"), (str(path),))

    def remove_document(self, doc_id: str) -> None:
        with self._tx() as conn:
            cur = conn.execute(self._sql("DELETE FROM {s}.documents WHERE id = %s"), (doc_id,))
            if cur.rowcount == 0:
                raise document_not_found(self.name, doc_id)

    def list_documents(self) -> list[DocumentInfo]:
        with self._tx() as conn:
            return self._info(conn, "true", ())

    def get_document(self, doc_id: str) -> DocumentInfo:
        with self._tx() as conn:
            found = self._info(conn, "d.id = %s", (doc_id,))
        if not found:
            raise document_not_found(self.name, doc_id)
        return found[0]

    def page_text(self, doc_id: str, page: int) -> str:
        with self._tx() as conn:
            row = conn.execute(
                self._sql("SELECT text FROM {s}.pages WHERE doc_id = %s AND number = %s"), (doc_id, page)
            ).fetchone()
        if row is None:
            raise page_not_found(self.name, doc_id, page)
        return str(row[0])

    def document_pages(self, doc_id: str) -> list[tuple[int, str]]:
        with self._tx() as conn:
            return [
                (int(n), str(t))
                for n, t in conn.execute(
                    self._sql("SELECT number, text FROM {s}.pages WHERE doc_id = %s ORDER BY number"), (doc_id,)
                )
            ]

    def document_metadata(self, doc_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute(self._sql("SELECT metadata FROM {s}.documents WHERE id = %s"), (doc_id,)).fetchone()
        if row is None:
            raise document_not_found(self.name, doc_id)
        return dict(row[0])

    # ------------------------------------------------------------------ chunks and vectors
    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if not text_hashes:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT DISTINCT ON (text_sha) text_sha, embedding::text FROM {s}.chunks "
                    "WHERE text_sha = ANY(%s) AND embedding IS NOT NULL"
                ),
                (list(text_hashes),),
            ).fetchall()
        return {sha: parse_vec(v) for sha, v in rows}

    def _chunks(self, where: str, params: Sequence[Any]) -> list[Chunk]:
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {CHUNK_COLUMNS} FROM {{s}}.chunks c JOIN {{s}}.documents d ON d.id = c.doc_id {where}"
                ),
                params,
            ).fetchall()
        return [chunk_from_row(r) for r in rows]

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        by_id = {c.id: c for c in self._chunks("WHERE c.id = ANY(%s)", (list(chunk_ids),))}
        return [by_id[c] for c in chunk_ids if c in by_id]

    def neighbours(self, chunk: Chunk, n: int) -> list[Chunk]:
        if n <= 0:
            return []
        return self._chunks(
            "JOIN {s}.chunks me ON me.id = %s "
            "WHERE c.doc_id = me.doc_id AND c.ordinal BETWEEN me.ordinal - %s AND me.ordinal + %s "
            "AND c.id <> me.id ORDER BY c.ordinal",
            (chunk.id, n, n),
        )

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        """All chunks that have a vector, with it, in (doc, ordinal) order (export and migration)."""
        last: tuple[str, int] = ("", -1)
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    self._sql(
                        f"SELECT {CHUNK_COLUMNS}, c.embedding::text FROM {{s}}.chunks c JOIN {{s}}.documents d "
                        "ON d.id = c.doc_id WHERE (c.doc_id, c.ordinal) > (%s, %s) AND c.embedding IS NOT NULL "
                        "ORDER BY c.doc_id, c.ordinal LIMIT %s"
                    ),
                    (last[0], last[1], batch),
                ).fetchall()
            if not rows:
                return
            last = (rows[-1][1], rows[-1][2])
            yield [chunk_from_row(r) for r in rows], np.stack([parse_vec(r[-1]) for r in rows])

    # ------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        with self._tx() as conn:
            docs = conn.execute(self._sql("SELECT count(*) FROM {s}.documents")).fetchone()[0]
            chunks = conn.execute(self._sql("SELECT count(*) FROM {s}.chunks")).fetchone()[0]
            queued, pending = conn.execute(
                self._sql("SELECT count(*), count(DISTINCT text_sha) FROM {s}.chunks WHERE embedding IS NULL")
            ).fetchone()
            pages = conn.execute(self._sql("SELECT count(*) FROM {s}.pages")).fetchone()[0]
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()[0]
        return store_stats(
            self,
            documents=docs,
            chunks=chunks,
            pages=pages,
            index=dict(INDEX_PARAMS),
            keyword="postgres-fts-bm25",
            disk_bytes=size,
            embedded=chunks - queued,
            pending=pending,
            schema=self.schema,
            url=redact(self.url),
        )

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Load many documents fast: drop the HNSW index, load, then build it once.

        Searches stay correct meanwhile (exact scans), only slower; use for imports and first loads.
        """
        with self._tx() as conn:
            conn.execute(self._sql("DROP INDEX IF EXISTS {s}.chunks_hnsw"))
        try:
            yield
        finally:
            self._create_hnsw()

    @contextmanager
    def _maintenance(self) -> Iterator[Connection]:
        """An autocommit connection for index builds (CREATE INDEX / REINDEX cannot run in a transaction)."""
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                # The whole graph in memory (~1.8 GB at 1M x 384-d); no parallel workers, whose shared
                # memory segment would not fit a container's default 64 MB /dev/shm.
                conn.execute("SET maintenance_work_mem = '3GB'")
                conn.execute("SET max_parallel_maintenance_workers = 0")
                yield conn
            finally:
                conn.autocommit = False

    def _create_hnsw(self) -> None:
        with self._maintenance() as conn:
            conn.execute(self._sql(HNSW_INDEX.replace("{exists}", "IF NOT EXISTS ")))

    def rebuild_indexes(self) -> None:
        """Rebuild the HNSW and full-text indexes from the stored rows (no re-embedding)."""
        with self._maintenance() as conn:
            conn.execute(self._sql("REINDEX TABLE {s}.chunks"))
        self._create_hnsw()  # in case a bulk load was interrupted before building it

    def close(self) -> None:
        self._closed = True
