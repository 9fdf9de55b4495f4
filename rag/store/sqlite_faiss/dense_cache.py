"""The FAISS index of an embedded KB as a cache of SQLite's vectors, kept at SQLite's generation.

The index is keyed by chunk rowid and saved as `dense.<gen>.<kind>.faiss`. Whenever its generation
differs from SQLite's (a crash before saving, another process ingesting) it is reconciled by diffing
rowids: vectors come from SQLite, nothing is re-embedded. It holds only chunks that have a vector (a chunk
queued to embed joins when its vector is stored: SqliteFaissStore.add_embeddings). It switches between exact (flat) and HNSW
around `hnsw_threshold` chunks and records the kind in the manifest.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from rag.store.dense_index import DenseIndex
from rag.store.manifest import Manifest, write_manifest
from rag.store.sqlite_faiss.sql import EMBEDDED_ROWIDS, chunk_vectors, generation

SAVE_INTERVAL_S = 30.0  # persist the FAISS file at most this often during bulk writes (and on close)
REBUILD_DEAD_SHARE = 0.2  # rebuild an HNSW index once this share of its entries are tombstones


class DenseCache:
    """Owns the in-memory DenseIndex of one KB; the store calls it under its own lock."""

    def __init__(
        self, conn: sqlite3.Connection, folder: Path, manifest: Manifest, dim: int, hnsw_threshold: int
    ) -> None:
        self._conn = conn
        self.folder = folder
        self.manifest = manifest
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.gen = -1  # generation the in-memory index reflects
        self._saved_gen = -1
        self._last_save = time.monotonic()
        self.index = self._load()

    def _load(self) -> DenseIndex:
        found = DenseIndex.latest_file(self.folder)
        if found is not None:
            path, gen, file_kind = found
            try:
                self.index = DenseIndex.load(path, self.dim, file_kind)
                self.gen = self._saved_gen = gen
                self.reconcile()
                return self.index
            except (RuntimeError, OSError, ValueError):
                pass  # unreadable or foreign file: rebuild below from SQLite
        self.index = DenseIndex(self.dim, str(self.manifest.index.get("kind", "flat")))
        self.gen = -1
        self.reconcile()
        return self.index

    def sync(self) -> None:
        """Bring the index up to SQLite's generation (another process may have written)."""
        if generation(self._conn) != self.gen:
            self.reconcile()

    def reconcile(self) -> None:
        """Diff embedded chunks' rowids between SQLite and the index; add/remove the difference (no re-embedding)."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            gen = generation(conn)
            # Only chunks that have a vector: a chunk still queued to embed is not "missing" from the index.
            sql_ids = np.fromiter((r[0] for r in conn.execute(EMBEDDED_ROWIDS)), dtype=np.int64)
            live = self.index.live_ids()
            to_add = np.setdiff1d(sql_ids, live, assume_unique=True)
            to_remove = np.setdiff1d(live, sql_ids, assume_unique=True)
            if len(to_add) > 0.5 * max(1, len(sql_ids)) and len(to_add) > 1000:
                self.index = DenseIndex(self.dim, self.index.kind)  # cheaper to start over
                to_remove = np.zeros(0, dtype=np.int64)
                to_add = sql_ids
            ids, vecs = chunk_vectors(conn, to_add.tolist(), self.dim)
        finally:
            conn.execute("COMMIT")
        self.index.remove(to_remove)
        self.index.add(ids, vecs)
        self.gen = gen
        self._maybe_switch_kind()

    def _maybe_switch_kind(self) -> None:
        dense = self.index
        if dense.kind == "flat" and dense.live > self.hnsw_threshold:
            self.index = dense.rebuilt("hnsw")
        elif dense.kind == "hnsw" and dense.live <= self.hnsw_threshold // 2:
            self.index = dense.rebuilt("flat")
        elif dense.kind == "hnsw" and len(dense.dead) > REBUILD_DEAD_SHARE * max(1, dense.ntotal):
            self.index = dense.rebuilt("hnsw")
        wanted = {"kind": self.index.kind, "hnsw_threshold": self.hnsw_threshold}
        if {k: self.manifest.index.get(k) for k in wanted} != wanted:
            self.manifest.index = wanted
            write_manifest(self.folder, self.manifest)

    def after_write(
        self, gen_before: int, gen_after: int, removed: np.ndarray, added_ids: np.ndarray, added_vecs: np.ndarray
    ) -> None:
        """Apply one committed write: incrementally when the index was current before it, else reconcile.

        `added_ids`/`added_vecs`: only chunks that got a vector (a queued chunk joins on add_embeddings)."""
        if gen_before == self.gen:
            self.index.remove(removed)
            self.index.add(added_ids, added_vecs)
            self.gen = gen_after
            self._maybe_switch_kind()
        else:
            self.reconcile()
        if time.monotonic() - self._last_save > SAVE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Persist the index if it is ahead of the saved file."""
        if self.gen != self._saved_gen and self.gen >= 0:
            self.index.save(self.folder, self.gen)
            self._saved_gen = self.gen
        self._last_save = time.monotonic()

    def rebuild(self) -> None:
        """Start over from SQLite's vectors (flat first; reconcile switches kind) and save."""
        self.index = DenseIndex(self.dim, "flat")
        self.gen = -1
        self.reconcile()
        self._saved_gen = -1
        self.flush()
