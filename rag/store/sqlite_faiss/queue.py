"""The embedding queue of the embedded store (deferred embedding; a mixin of SqliteFaissStore).

`add_document(vectors=None)` commits chunks with their keys queued in `pending_embeddings` (schema.py);
an embedding worker takes `pending_embeddings()`, embeds them and hands the vectors to `add_embeddings()`.
The queue is a table in the KB, so it survives kill -9 and restarts, and several processes can share it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rag.store.common import validate_embeddings
from rag.store.sqlite_faiss.sql import (
    QUEUED_CHUNKS,
    Txn,
    chunk_vectors,
    dequeue,
    generation,
    queued_keys,
    rowids_of_keys,
    set_generation,
)

if TYPE_CHECKING:
    from rag.store.sqlite_faiss.dense_cache import DenseCache


class EmbeddingQueue:
    """pending_embeddings / add_embeddings / embedding_counts of SqliteFaissStore (which sets these attributes)."""

    name: str
    dim: int
    _lock: threading.RLock
    _conn: sqlite3.Connection
    _dense: DenseCache
    _embedding_counts: tuple[int, tuple[int, int]]

    if TYPE_CHECKING:

        def _write(self) -> Txn: ...

    def pending_embeddings(self, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` queued (key, embedding input) pairs, in the order they were queued."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT text_sha256, text FROM pending_embeddings ORDER BY rowid LIMIT ?", (max(0, int(limit)),)
            )
            return [(str(k), str(t)) for k, t in rows]

    def add_embeddings(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors of still-queued keys and dequeue them in one transaction (a new generation, so other
        processes reconcile); this process's FAISS index gains every chunk using those keys at once."""
        by_key = validate_embeddings(keys, vectors, self.dim, self.name)
        if not by_key:
            return 0
        with self._lock:
            with self._write() as conn:
                gen_before = generation(conn)
                stored = queued_keys(conn, list(by_key))
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors(text_sha256, vector) VALUES (?, ?)",
                    [(k, by_key[k].tobytes()) for k in stored],
                )
                dequeue(conn, stored)
                gen_after = gen_before + 1 if stored else gen_before
                set_generation(conn, gen_after)
                ids, vecs = chunk_vectors(conn, rowids_of_keys(conn, stored), self.dim)
            self._dense.after_write(gen_before, gen_after, np.zeros(0, np.int64), ids, vecs)
            return len(stored)

    def embedding_counts(self) -> tuple[int, int]:
        """(chunks with a vector, all chunks), computed once per generation."""
        with self._lock:
            gen = generation(self._conn)
            if self._embedding_counts[0] != gen:
                total = int(self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
                queued = int(self._conn.execute(QUEUED_CHUNKS).fetchone()[0])
                self._embedding_counts = (gen, (total - queued, total))
            return self._embedding_counts[1]
