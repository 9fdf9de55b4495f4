"""The FAISS index derived from a knowledge base's SQLite vectors.

IDs are chunk rowids (never reused: AUTOINCREMENT). Exact search (IndexIDMap2 over IndexFlatIP)
while the index holds fewer than `hnsw_threshold` vectors, HNSW (M=32) above it. HNSW cannot delete,
so removed ids become tombstones filtered out of results until the next rebuild.

Persisted as `dense.<generation>.<kind>.faiss` (temp file + os.replace), where generation is the
SQLite write generation the file reflects; the store reconciles a stale file against SQLite by diffing
ids (no re-embedding) and rebuilds from scratch when the file is missing or unreadable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from rag.store.private import FILE_MODE

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 96
_FILE_RE = re.compile(r"dense\.(\d+)\.(flat|hnsw)\.faiss$")


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


def _threads(n: int) -> None:
    """Single queries run on one OpenMP thread: FAISS's parallel scan of one query costs more in
    thread wake-ups than it saves here, and on a busy machine it is 10-100x slower (measured:
    10k-vector Flat search 120 ms with OpenMP vs ~1 ms without). Bulk adds use all cores."""
    _faiss().omp_set_num_threads(n)


_CORES = os.cpu_count() or 1


class DenseIndex:
    """An id-mapped inner-product index with tombstones, exact subset search and atomic persistence."""

    def __init__(self, dim: int, kind: str = "flat") -> None:
        self.dim = dim
        self.kind = kind
        self.index = self._new(kind)
        self.dead: set[int] = set()  # ids removed from SQLite but still inside an HNSW graph
        self._pos_cache: tuple[int, np.ndarray, np.ndarray] | None = None  # (ntotal, sorted ids, positions)

    def _new(self, kind: str):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    # --- contents ---------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.dead)

    def ids(self) -> np.ndarray:
        """All ids stored (including tombstones)."""
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def live_ids(self) -> np.ndarray:
        ids = self.ids()
        if self.dead:
            ids = ids[~np.isin(ids, np.fromiter(self.dead, dtype=np.int64))]
        return ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.dead:
            self.dead.difference_update(ids.tolist())
        _threads(_CORES if len(ids) > 1000 else 1)
        self.index.add_with_ids(vectors, ids)
        self._pos_cache = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == "hnsw":
            self.dead.update(ids.tolist())
        else:
            self.index.remove_ids(_faiss().IDSelectorBatch(ids))
        self._pos_cache = None

    def vectors(self) -> np.ndarray:
        """A zero-copy (ntotal, dim) view of the stored vectors, in storage order."""
        faiss = _faiss()
        inner = faiss.downcast_index(self.index.index)
        flat = inner if self.kind == "flat" else faiss.downcast_index(inner.storage)
        n = self.ntotal
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Storage positions of `ids` (ids not present are dropped)."""
        if self._pos_cache is None or self._pos_cache[0] != self.ntotal:
            all_ids = self.ids()
            order = np.argsort(all_ids, kind="stable")
            self._pos_cache = (self.ntotal, all_ids[order], order)
        _, sorted_ids, order = self._pos_cache
        if len(sorted_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        where = np.searchsorted(sorted_ids, ids)
        where = np.clip(where, 0, len(sorted_ids) - 1)
        ok = sorted_ids[where] == ids
        return order[where[ok]]

    # --- search -----------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, cosine) over everything live."""
        if self.ntotal == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        fetch = min(self.ntotal, k + (min(len(self.dead), 4 * k) if self.dead else 0))
        _threads(1)
        scores, ids = self.index.search(q, fetch)
        out = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) not in self.dead]
        if len(out) < k and self.dead and self.live > len(out):
            # Too many tombstones near the query: fall back to an exact scan of live vectors.
            return self.search_subset(query, k, self.live_ids())
        return out[:k]

    def search_subset(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[int, float]]:
        """Exact top-k over the given ids only (for narrow filters)."""
        if len(ids) == 0 or k <= 0:
            return []
        ids = np.asarray(ids, dtype=np.int64)
        if self.dead:
            ids = ids[~np.isin(ids, np.fromiter(self.dead, dtype=np.int64))]
        pos = self.positions(ids)
        if len(pos) == 0:
            return []
        stored_ids = self.ids()[pos]
        scores = self.vectors()[pos] @ np.asarray(query, dtype=np.float32).reshape(self.dim)
        top = min(k, len(scores))
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(stored_ids[i]), float(scores[i])) for i in best]

    def search_selected(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[int, float]]:
        """Top-k restricted to `ids` using FAISS's id selector (wide filters; exact for Flat)."""
        faiss = _faiss()
        if self.dead:
            ids = ids[~np.isin(ids, np.fromiter(self.dead, dtype=np.int64))]
        if len(ids) == 0:
            return []
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        params = (
            faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, 2 * k))
            if self.kind == "hnsw"
            else faiss.SearchParameters(sel=sel)
        )
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        _threads(1)
        scores, found = self.index.search(q, min(k, len(ids)), params=params)
        return [(int(i), float(s)) for i, s in zip(found[0], scores[0]) if i >= 0]

    # --- kind switch ------------------------------------------------------------------------
    def rebuilt(self, kind: str) -> DenseIndex:
        """A fresh index of `kind` holding the live vectors (drops tombstones)."""
        fresh = DenseIndex(self.dim, kind)
        ids = self.ids()
        if self.ntotal:
            vecs = np.array(self.vectors(), copy=True)
            if self.dead:
                keep = ~np.isin(ids, np.fromiter(self.dead, dtype=np.int64))
                ids, vecs = ids[keep], vecs[keep]
            order = np.argsort(ids, kind="stable")
            fresh.add(ids[order], vecs[order])
        return fresh

    # --- persistence ------------------------------------------------------------------------
    def save(self, folder: Path, generation: int) -> Path:
        """Write `dense.<generation>.<kind>.faiss` atomically and delete older index files.

        Tombstoned ids are written as they are; the next open reconciles them away again.
        """
        faiss = _faiss()
        path = folder / f"dense.{generation}.{self.kind}.faiss"
        tmp = folder / f".dense.{os.getpid()}.tmp"
        faiss.write_index(self.index, str(tmp))
        os.chmod(tmp, FILE_MODE)  # faiss creates it with the umask's mode; the index is the KB's data
        os.replace(tmp, path)
        for other in folder.glob("dense.*.faiss"):
            if other != path:
                other.unlink(missing_ok=True)
        return path

    @staticmethod
    def latest_file(folder: Path) -> tuple[Path, int, str] | None:
        best: tuple[Path, int, str] | None = None
        for candidate in folder.glob("dense.*.faiss"):
            m = _FILE_RE.match(candidate.name)
            if m and (best is None or int(m.group(1)) > best[1]):
                best = (candidate, int(m.group(1)), m.group(2))
        return best

    @classmethod
    def load(cls, path: Path, dim: int, kind: str) -> DenseIndex:
        """Read an index file; raises RuntimeError/OSError/ValueError when it is unusable."""
        faiss = _faiss()
        raw = faiss.read_index(str(path))
        if raw.d != dim:
            raise ValueError(f"{path}: index dimension {raw.d} != {dim}")
        obj = cls.__new__(cls)
        obj.dim = dim
        obj.kind = kind
        obj.index = raw  # read_index already returns the concrete (downcast) type
        if not isinstance(obj.index, faiss.IndexIDMap2):
            raise ValueError(f"{path}: not an IndexIDMap2")  # noqa: TRY004 - a bad file, not a bad argument
        if kind == "hnsw":
            faiss.downcast_index(obj.index.index).hnsw.efSearch = HNSW_EF_SEARCH
        obj.dead = set()
        obj._pos_cache = None
        return obj
