"""One knowledge base in Milvus: reads that hide unpublished writes, dense/BM25/hybrid search, stats.

Writes follow the publish protocol in publish.py; the collections are defined in schema.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import InvalidRequest, KnowledgeBaseError
from rag.protocols import SearchFilter
from rag.records import Chunk, DocumentInfo, Hit
from rag.store.analyzer import tokenize
from rag.store.common import (
    CHUNK_FIELDS,
    chunk_from_mapping,
    document_not_found,
    metadata_matches,
    page_not_found,
    store_stats,
)
from rag.store.manifest import Manifest
from rag.store.milvus.client import in_expr, is_lite, lit, truncate_utf8
from rag.store.milvus.publish import MilvusPublish
from rag.store.milvus.schema import CONSISTENCY, DOC_FIELDS, INDEX_PARAMS, dummy

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

BACKEND = "milvus"
QUERY_WINDOW = 16_384  # Milvus's largest offset+limit for one query
_OUTPUT = list(CHUNK_FIELDS)


def _hit_chunk(h: dict[str, Any]) -> Chunk:
    return chunk_from_mapping(h["entity"] | {"id": h["id"]})


class MilvusStore(MilvusPublish):
    """One knowledge base in Milvus (see rag/store/milvus/__init__.py for the collections)."""

    backend = BACKEND
    defers_embedding = False  # a Milvus row needs its vector: add_document embeds first (see the package doc)

    def __init__(self, client: MilvusClient, uri: str, name: str, prefix: str, manifest: Manifest) -> None:
        self.name = name
        self.path: Path | None = Path(uri) if is_lite(uri) else None
        self.uri = uri
        self.prefix = prefix
        self.manifest = manifest
        self.embedder_id = manifest.embedder
        self.dim = manifest.dim
        self._c = client
        self._closed = False
        self._chunks = f"{prefix}_chunks"
        self._docs = f"{prefix}_docs"
        self._pages = f"{prefix}_pages"
        self._paths = f"{prefix}_paths"

    # ------------------------------------------------------------------ plumbing
    def _client(self) -> MilvusClient:
        if self._closed:
            raise KnowledgeBaseError(f"knowledge base {self.name!r} is closed")
        return self._c

    def _query_all(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching `expr`: one query, or an iterator past Milvus's query window."""
        c = self._client()
        rows = c.query(collection, filter=expr, output_fields=fields, limit=QUERY_WINDOW)
        if len(rows) < QUERY_WINDOW:
            return rows
        it = c.query_iterator(collection, batch_size=1000, filter=expr, output_fields=fields)
        out: list[dict[str, Any]] = []
        try:
            while True:
                batch = it.next()
                if not batch:
                    return out
                out.extend(batch)
        finally:
            it.close()

    def _doc_rows(self, expr: str = "") -> list[dict[str, Any]]:
        return self._query_all(self._docs, expr or 'id != ""', list(DOC_FIELDS))

    def _visibility(self) -> tuple[list[dict[str, Any]], set[str]]:
        """(ready and current document rows, ids hidden from readers)."""
        rows = self._doc_rows()
        ready = [r for r in rows if r["state"] == "ready"]
        replaced = {r["replaces"] for r in ready if r["replaces"]}
        hidden = {r["id"] for r in rows if r["state"] != "ready"} | replaced
        return [r for r in ready if r["id"] not in hidden], hidden

    def _hidden(self) -> set[str]:
        """Ids of documents being written or being replaced (usually none: a small filtered query)."""
        rows = self._client().query(
            self._docs, filter='state != "ready" or replaces != ""', output_fields=["id", "state", "replaces"]
        )
        return {r["id"] for r in rows if r["state"] != "ready"} | {
            r["replaces"] for r in rows if r["state"] == "ready" and r["replaces"]
        }

    def _infos(self, rows: list[dict[str, Any]]) -> list[DocumentInfo]:
        paths: dict[str, list[str]] = {r["id"]: [] for r in rows}
        if paths:
            for row in self._query_all(self._paths, in_expr("doc_id", list(paths)), ["path", "doc_id"]):
                paths.setdefault(row["doc_id"], []).append(row["path"])
        infos = [
            DocumentInfo(
                id=r["id"],
                source=r["source"],
                title=r["title"],
                sha256=r["sha256"],
                pages=int(r["pages"]),
                chunks=int(r["chunks"]),
                added_at=float(r["added_at"]),
                paths=sorted(paths.get(r["id"], [])),
            )
            for r in rows
        ]
        return sorted(infos, key=lambda d: (d.source, d.id))

    def snapshot(self) -> AbstractContextManager[None]:
        """A no-op: Milvus has no read snapshots; the publish protocol keeps each document consistent."""
        return nullcontext()

    # ------------------------------------------------------------------ documents
    def find_by_sha(self, sha256: str) -> DocumentInfo | None:
        visible, _ = self._visibility()
        found = [r for r in visible if r["sha256"] == sha256]
        return self._infos(found)[0] if found else None

    def find_by_path(self, path: str) -> DocumentInfo | None:
        rows = self._client().query(self._paths, filter=f"path == {lit(path)}", output_fields=["doc_id"])
        if not rows:
            return None
        visible, _ = self._visibility()
        found = [r for r in visible if r["id"] == rows[0]["doc_id"]]
        return self._infos(found)[0] if found else None

    def add_path(self, doc_id: str, path: str) -> None:
        self.get_document(doc_id)
        c = self._client()
        c.upsert(self._paths, [{"path": truncate_utf8(path, 4096), "doc_id": doc_id, "_v": dummy()}])
        c.flush(self._paths)

    def remove_path(self, path: str) -> None:
        """Forget one path; the document itself stays."""
        c = self._client()
        c.delete(self._paths, ids=[truncate_utf8(path, 4096)])
        c.flush(self._paths)

    def list_documents(self) -> list[DocumentInfo]:
        visible, _ = self._visibility()
        return self._infos(visible)

    def get_document(self, doc_id: str) -> DocumentInfo:
        visible, _ = self._visibility()
        found = [r for r in visible if r["id"] == doc_id]
        if not found:
            raise document_not_found(self.name, doc_id)
        return self._infos(found)[0]

    def page_text(self, doc_id: str, page: int) -> str:
        rows = self._client().query(
            self._pages, filter=f"doc_id == {lit(doc_id)} and number == {int(page)}", output_fields=["part", "text"]
        )
        if not rows:
            raise page_not_found(self.name, doc_id, page)
        return "".join(r["text"] for r in sorted(rows, key=lambda r: r["part"]))

    def document_pages(self, doc_id: str) -> list[tuple[int, str]]:
        rows = self._query_all(self._pages, f"doc_id == {lit(doc_id)}", ["number", "part", "text"])
        pages: dict[int, list[tuple[int, str]]] = {}
        for r in rows:
            pages.setdefault(int(r["number"]), []).append((int(r["part"]), r["text"]))
        return [(n, "".join(t for _, t in sorted(parts))) for n, parts in sorted(pages.items())]

    def document_metadata(self, doc_id: str) -> dict[str, Any]:
        rows = self._client().query(self._docs, filter=f"id == {lit(doc_id)}", output_fields=["metadata"])
        if not rows:
            raise document_not_found(self.name, doc_id)
        return dict(json.loads(rows[0]["metadata"]))

    # ------------------------------------------------------------------ chunks and vectors
    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        """All chunks of visible documents with their stored vectors, document by document."""
        visible, _ = self._visibility()
        for r in sorted(visible, key=lambda r: r["id"]):
            rows = self._query_all(self._chunks, f"doc_id == {lit(r['id'])}", [*_OUTPUT, "embedding"])
            rows.sort(key=lambda e: int(e["ordinal"]))
            for start in range(0, len(rows), batch):
                part = rows[start : start + batch]
                yield [chunk_from_mapping(e) for e in part], np.asarray([e["embedding"] for e in part], np.float32)

    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        hashes = list(dict.fromkeys(text_hashes))
        for start in range(0, len(hashes), 1000):
            rows = self._client().query(
                self._chunks,
                filter=in_expr("text_sha", hashes[start : start + 1000]),
                output_fields=["text_sha", "embedding"],
            )
            for r in rows:
                out.setdefault(r["text_sha"], np.asarray(r["embedding"], dtype=np.float32))
        return out

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        by_id: dict[str, Chunk] = {}
        ids = list(chunk_ids)
        for start in range(0, len(ids), 1000):
            for r in self._client().query(
                self._chunks, filter=in_expr("id", ids[start : start + 1000]), output_fields=_OUTPUT
            ):
                by_id[r["id"]] = chunk_from_mapping(r)
        return [by_id[c] for c in chunk_ids if c in by_id]

    def neighbours(self, chunk: Chunk, n: int) -> list[Chunk]:
        if n <= 0:
            return []
        me = self._client().query(self._chunks, filter=f"id == {lit(chunk.id)}", output_fields=["doc_id", "ordinal"])
        if not me:
            return []
        doc_id, ordinal = me[0]["doc_id"], int(me[0]["ordinal"])
        rows = self._client().query(
            self._chunks,
            filter=f"doc_id == {lit(doc_id)} and ordinal >= {ordinal - n} and ordinal <= {ordinal + n}",
            output_fields=_OUTPUT,
        )
        return sorted((chunk_from_mapping(r) for r in rows if r["id"] != chunk.id), key=lambda ch: ch.ordinal)

    # ------------------------------------------------------------------ search
    def _filter_expr(self, flt: SearchFilter | None) -> str | None:
        """Filter expression for chunk searches; None when the filter matches nothing."""
        hidden = self._hidden()
        clauses: list[str] = []
        if hidden:
            clauses.append(f"not ({in_expr('doc_id', sorted(hidden))})")
        if flt:
            if flt.metadata:
                visible, _ = self._visibility()
                allowed = {
                    r["id"] for r in visible if metadata_matches(json.loads(r["metadata"] or "{}"), flt.metadata)
                }
                if flt.doc_ids:
                    allowed &= set(flt.doc_ids)
            else:
                allowed = set(flt.doc_ids) - hidden
            if not allowed:
                return None
            clauses.append(in_expr("doc_id", sorted(allowed)))
        return " and ".join(clauses)

    def _search(
        self, data: list[Any], field: str, metric: str, k: int, expr: str, params: dict[str, Any]
    ) -> list[tuple[Chunk, float]]:
        res = self._client().search(
            self._chunks,
            data=data,
            anns_field=field,
            limit=k,
            filter=expr,
            output_fields=_OUTPUT,
            search_params={"metric_type": metric, "params": params},
            consistency_level=CONSISTENCY,
        )
        return [(_hit_chunk(h), float(h["distance"])) for h in res[0]]

    def dense_search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        expr = self._filter_expr(flt)
        if expr is None or k <= 0:
            return []
        found = self._search(
            [np.asarray(vector, dtype=np.float32).ravel().tolist()], "embedding", "IP", k, expr, {"ef": max(64, 2 * k)}
        )
        return [Hit(chunk=ch, score=s, rank=i + 1, retriever="dense") for i, (ch, s) in enumerate(found)]

    def keyword_search(self, query: str, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        terms = " ".join(tokenize(query))
        expr = self._filter_expr(flt)
        if not terms or expr is None or k <= 0:
            return []
        found = self._search([terms], "sparse", "BM25", k, expr, {})
        # Milvus Lite reports BM25 as a negated distance; the ranking is what matters, the score is |bm25|.
        return [Hit(chunk=ch, score=abs(s), rank=i + 1, retriever="keyword") for i, (ch, s) in enumerate(found)]

    def hybrid_search(
        self,
        query: str,
        vector: np.ndarray,
        k: int,
        flt: SearchFilter | None = None,
        *,
        candidates: int = 40,
        rrf_k: int = 60,
    ) -> list[Hit]:
        """Dense + BM25 fused by Milvus's RRFRanker in one request."""
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = self._filter_expr(flt)
        if expr is None or k <= 0:
            return []
        terms = " ".join(tokenize(query))
        dense = {"metric_type": "IP", "params": {"ef": max(64, 2 * candidates)}}
        vec = [np.asarray(vector, dtype=np.float32).ravel().tolist()]
        reqs = [AnnSearchRequest(vec, "embedding", dense, candidates, expr=expr or None)]
        if terms:
            reqs.append(AnnSearchRequest([terms], "sparse", {"metric_type": "BM25"}, candidates, expr=expr or None))
        res = self._client().hybrid_search(
            self._chunks, reqs, RRFRanker(rrf_k), limit=k, output_fields=_OUTPUT, consistency_level=CONSISTENCY
        )
        return [
            Hit(chunk=_hit_chunk(h), score=float(h["distance"]), rank=i + 1, retriever="hybrid")
            for i, h in enumerate(res[0])
        ]

    # ------------------------------------------------------------------ deferred embedding: not here
    def pending_embeddings(self, limit: int) -> list[tuple[str, str]]:
        """Always empty: every stored chunk has its vector (defers_embedding is False)."""
        return []

    def add_embeddings(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Nothing is ever queued: an empty call stores 0, any other is the caller's error."""
        if len(keys) == 0:
            return 0
        raise InvalidRequest(f"knowledge base {self.name!r} (milvus) has no embedding queue: nothing to add vectors to")

    def embedding_counts(self) -> tuple[int, int]:
        chunks = sum(int(r["chunks"]) for r in self._visibility()[0])
        return chunks, chunks

    # ------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        visible, hidden = self._visibility()
        disk = 0
        if self.path is not None and self.path.exists():
            disk = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return store_stats(
            self,
            documents=len(visible),
            chunks=sum(int(r["chunks"]) for r in visible),
            pages=sum(int(r["pages"]) for r in visible),
            index=dict(INDEX_PARAMS),
            keyword="milvus-bm25",
            disk_bytes=disk,
            embedded=sum(int(r["chunks"]) for r in visible),
            pending=0,
            collections=[self._chunks, self._docs, self._pages, self._paths],
            uri=self.uri,
            pending_documents=len(hidden),
        )

    def rebuild_indexes(self) -> None:
        """Milvus maintains its indexes itself; compacting merges segments after many deletes."""
        c = self._client()
        c.flush(self._chunks)
        try:
            c.compact(self._chunks)
        except Exception as exc:  # noqa: BLE001 - compaction is an optimisation some deployments (Lite) lack
            log.info("Milvus compaction of %s skipped: %s", self._chunks, exc)

    def close(self) -> None:
        self._closed = True
