"""The publish protocol of Milvus writes (a mixin of MilvusStore).

Milvus has no multi-collection transactions, so a document is written as: its row as 'writing',
then its pages and chunks, a flush, then the row flips to 'ready' and the replaced version is
deleted. Readers hide documents that are 'writing' or named by a ready document's `replaces`, so a
crash at any point shows the old state or the new; leftovers are cleaned when the same document is
written again or by `recover()`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.records import Chunk, DocumentInfo, ParsedDocument, indexed_text
from rag.store.analyzer import tokenize
from rag.store.common import chunk_text_hash, not_deferred, validate_write
from rag.store.milvus.client import lit, split_utf8, truncate_utf8
from rag.store.milvus.schema import DOC_FIELDS, MAX_VARCHAR, dummy

if TYPE_CHECKING:
    from pymilvus import MilvusClient

PAGE_PART_BYTES = 60_000
INSERT_BATCH = 2_000
STALE_WRITE_S = 3_600.0  # a 'writing' document older than this is a crashed write


class MilvusPublish:
    """Writes of MilvusStore; it provides the collection names and the read helpers named below."""

    name: str
    dim: int
    _chunks: str
    _docs: str
    _pages: str
    _paths: str

    if TYPE_CHECKING:

        def _client(self) -> MilvusClient: ...

        def _hidden(self) -> set[str]: ...

        def _doc_rows(self, expr: str = "") -> list[dict[str, Any]]: ...

        def _query_all(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]: ...

        def get_document(self, doc_id: str) -> DocumentInfo: ...

        def add_path(self, doc_id: str, path: str) -> None: ...

    def _delete_doc_data(self, doc_id: str) -> None:
        c = self._client()
        expr = f"doc_id == {lit(doc_id)}"
        c.delete(self._chunks, filter=expr)
        c.delete(self._pages, filter=expr)
        c.delete(self._paths, filter=expr)

    def _doc_row(
        self, doc: ParsedDocument, doc_id: str, chunks: int, state: str, replaces: str, added_at: float
    ) -> dict[str, Any]:
        return {
            "id": doc_id,
            "source": truncate_utf8(doc.source, 4096),
            "title": truncate_utf8(doc.title, 4096),
            "sha256": doc.sha256,
            "pages": len(doc.pages),
            "chunks": chunks,
            "added_at": added_at,
            "updated_at": time.time(),
            "metadata": truncate_utf8(json.dumps(doc.metadata or {}, ensure_ascii=False, default=str), MAX_VARCHAR),
            "state": state,
            "replaces": replaces,
            "_v": dummy(),
        }

    def _chunk_row(self, chunk: Chunk, i: int, doc_id: str, source: str, vec: np.ndarray) -> dict[str, Any]:
        return {
            "id": chunk.id,
            "doc_id": doc_id,
            "ordinal": chunk.ordinal if chunk.ordinal else i,
            "text": truncate_utf8(chunk.text, MAX_VARCHAR),
            "page_start": chunk.page_start,
            "page_end": chunk.page_end,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
            "section": truncate_utf8(chunk.section, 2048),
            "token_count": chunk.token_count,
            "text_sha": chunk_text_hash(indexed_text(chunk)),
            "source": truncate_utf8(source, 4096),
            "tokens": truncate_utf8(" ".join(tokenize(indexed_text(chunk))), MAX_VARCHAR) or "_",
            "embedding": vec.tolist(),
        }

    def add_document(
        self,
        doc: ParsedDocument,
        chunks: list[Chunk],
        vectors: np.ndarray | None,
        *,
        replaces: str | None = None,
    ) -> DocumentInfo:
        """Publish a document: 'writing' row, pages + chunks, flush, 'ready' row, drop the replaced one.

        A Milvus row needs its vector, so `vectors=None` (deferred embedding) is refused: InvalidRequest."""
        if vectors is None:
            raise not_deferred(self.name, "milvus")
        doc_id, vectors = validate_write(doc, chunks, vectors, self.dim, self.name)
        c = self._client()
        same = c.query(self._docs, filter=f'sha256 == {lit(doc.sha256)} and state == "ready"', output_fields=["id"])
        same_ids = {r["id"] for r in same} - self._hidden()
        if same_ids and not same_ids & {doc_id, replaces}:
            # Same content already stored under another id: only record the new path (dedup).
            existing = min(same_ids)
            self.add_path(existing, doc.source)
            return self.get_document(existing)
        replaces = replaces if replaces and replaces != doc_id else ""
        # The same content under its own id (a re-chunk, or another writer that got here first) keeps its paths.
        kept = (
            [r["path"] for r in self._query_all(self._paths, f"doc_id == {lit(doc_id)}", ["path"])]
            if doc_id in same_ids
            else []
        )
        added_at = time.time()
        c.upsert(self._docs, [self._doc_row(doc, doc_id, len(chunks), "writing", replaces, added_at)])
        self._delete_doc_data(doc_id)  # leftovers of an earlier crashed write of the same document
        page_rows = [
            {
                "id": f"{doc_id}#{p.number}#{i}",
                "doc_id": doc_id,
                "number": p.number,
                "part": i,
                "text": part,
                "_v": dummy(),
            }
            for p in doc.pages
            for i, part in enumerate(split_utf8(p.text, PAGE_PART_BYTES))
        ]
        for start in range(0, len(page_rows), INSERT_BATCH):
            c.insert(self._pages, page_rows[start : start + INSERT_BATCH])
        rows: list[dict[str, Any]] = []
        for i, (chunk, vec) in enumerate(zip(chunks, vectors)):
            rows.append(self._chunk_row(chunk, i, doc_id, doc.source, vec))
            if len(rows) >= INSERT_BATCH:
                c.insert(self._chunks, rows)
                rows = []
        if rows:
            c.insert(self._chunks, rows)
        c.flush(self._chunks)
        c.flush(self._pages)
        c.upsert(self._docs, [self._doc_row(doc, doc_id, len(chunks), "ready", replaces, added_at)])
        paths = dict.fromkeys([truncate_utf8(doc.source, 4096), *kept])
        c.upsert(self._paths, [{"path": path, "doc_id": doc_id, "_v": dummy()} for path in paths])
        c.flush(self._docs)
        if replaces:
            self._finish_replace(replaces, doc_id)
        return self.get_document(doc_id)

    def _finish_replace(self, old: str, new: str) -> None:
        c = self._client()
        c.delete(self._chunks, filter=f"doc_id == {lit(old)}")
        c.delete(self._pages, filter=f"doc_id == {lit(old)}")
        # Paths still pointing at the old version now belong to the new one.
        moved = self._query_all(self._paths, f"doc_id == {lit(old)}", ["path"])
        if moved:
            c.upsert(self._paths, [{"path": r["path"], "doc_id": new, "_v": dummy()} for r in moved])
        c.delete(self._docs, ids=[old])
        rows = c.query(self._docs, filter=f"id == {lit(new)}", output_fields=["*"])
        if rows:
            row = {k: v for k, v in rows[0].items() if k in DOC_FIELDS}
            row["replaces"] = ""
            row["_v"] = dummy()
            c.upsert(self._docs, [row])
        c.flush(self._docs)

    def recover(self, stale_after_s: float = STALE_WRITE_S) -> dict[str, int]:
        """Finish interrupted replaces and drop writes abandoned for longer than `stale_after_s`."""
        finished = dropped = 0
        for r in self._doc_rows():
            if r["state"] == "ready" and r["replaces"]:
                self._finish_replace(r["replaces"], r["id"])
                finished += 1
            elif r["state"] != "ready" and time.time() - float(r["updated_at"]) > stale_after_s:
                self._delete_doc_data(r["id"])
                self._client().delete(self._docs, ids=[r["id"]])
                dropped += 1
        return {"finished_replaces": finished, "dropped_writes": dropped}

    def remove_document(self, doc_id: str) -> None:
        self.get_document(doc_id)
        c = self._client()
        # The row goes first: readers stop seeing the document before its chunks disappear.
        c.delete(self._docs, ids=[doc_id])
        c.flush(self._docs)
        self._delete_doc_data(doc_id)
