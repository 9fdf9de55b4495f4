"""Milvus knowledge bases via pymilvus: the same client code talks to Milvus Lite (a local `.db`
path, the default under CITEQA_HOME) and to a Milvus cluster (`http://host:19530`).

Everything lives in Milvus, so several service replicas can share one cluster (no local side file):
a registry collection `citeqa_kbs` (name -> manifest JSON) and, per knowledge base, five
collections named `kb_<hash of name>_*`:

  chunks  dense vector (HNSW, inner product) + a BM25 sparse vector computed by Milvus from `tokens`
          (the analyzer's tokens space-joined, split again by a whitespace tokenizer) + chunk fields
  docs    one row per document with `state` ('writing' | 'ready') and `replaces`
  pages   page text (split in parts under Milvus's VARCHAR limit)
  paths   path -> doc id (dedup by sha256: one document, many paths)

Milvus has no multi-collection transactions, so writes follow a publish protocol: the document row
is written as 'writing', then its pages and chunks, a flush, then the row flips to 'ready' and the
replaced version is deleted. Readers hide documents that are 'writing' or named by a ready
document's `replaces`, so a crash at any point shows the old state or the new; leftovers are
cleaned when the same document is written again or by `recover()`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import (
    ConfigError,
    DocumentNotFound,
    InvalidRequest,
    KnowledgeBaseError,
    KnowledgeBaseNotFound,
)
from rag.protocols import SearchFilter
from rag.records import Chunk, DocumentInfo, Hit, ParsedDocument, display_name
from rag.store.analyzer import tokenize
from rag.store.manifest import Manifest, check_embedder

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from rag.settings import Settings

log = logging.getLogger(__name__)

BACKEND = "milvus"
REGISTRY = "citeqa_kbs"
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
MAX_VARCHAR = 65_535
PAGE_PART_BYTES = 60_000
QUERY_WINDOW = 16_384  # Milvus's largest offset+limit for one query
INSERT_BATCH = 2_000
STALE_WRITE_S = 3_600.0  # a 'writing' document older than this is a crashed write
CONSISTENCY = "Strong"  # read-your-writes across replicas (a cluster may use "Bounded" for speed)

_clients: dict[str, MilvusClient] = {}
_clients_lock = threading.Lock()


def default_uri(settings: Settings) -> str:
    return str(Path(settings.paths.home) / "milvus.db")


def _is_lite(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def _client(uri: str) -> MilvusClient:
    """One client per URI per process (Milvus Lite serves a data dir to one process at a time)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the milvus store needs pymilvus: pip install pymilvus (and milvus-lite for local files)"
        ) from exc
    with _clients_lock:
        client = _clients.get(uri)
        if client is None:
            if _is_lite(uri):
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                client = MilvusClient(uri=uri)
            except Exception as exc:  # pymilvus raises MilvusException / ConnectionError; re-raised typed
                raise ConfigError(f"cannot connect to Milvus at {uri}: {exc}") from exc
            _clients[uri] = client
        return client


def release(uri: str) -> None:
    """Close the client for `uri` and, for Milvus Lite, stop its in-process server (frees the data dir)."""
    with _clients_lock:
        client = _clients.pop(uri, None)
    if client is not None:
        client.close()
    if _is_lite(uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(uri)


def prefix_for(name: str) -> str:
    """Collection-name prefix: Milvus names allow only [A-Za-z0-9_], so a hash stands for any KB name."""
    return "kb_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


def _lit(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def _in(field: str, values: Sequence[str]) -> str:
    return f"{field} in [{', '.join(_lit(v) for v in values)}]"


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def _split_utf8(text: str, limit: int) -> list[str]:
    parts: list[str] = []
    while True:
        head = _truncate_utf8(text, limit)
        parts.append(head)
        text = text[len(head) :]
        if not text:
            return parts


_CHUNK_FIELDS = [
    "id",
    "doc_id",
    "text",
    "page_start",
    "page_end",
    "char_start",
    "char_end",
    "section",
    "token_count",
    "ordinal",
    "source",
]


def _entity_to_chunk(e: dict[str, Any]) -> Chunk:
    return Chunk(
        id=e["id"],
        doc_id=e["doc_id"],
        text=e["text"],
        page_start=int(e["page_start"]),
        page_end=int(e["page_end"]),
        char_start=int(e["char_start"]),
        char_end=int(e["char_end"]),
        section=e.get("section", ""),
        token_count=int(e.get("token_count", 0)),
        ordinal=int(e["ordinal"]),
        doc=display_name(e.get("source", "")),
    )


def _metadata_matches(meta: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equality per key; a list value means any of its items (as the faiss backend does)."""
    for key, value in wanted.items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        if meta.get(key) not in values:
            return False
    return True


def _dummy() -> list[float]:
    return [0.0, 0.0]


class MilvusStore:
    """One knowledge base in Milvus (see the module docstring for the collections and protocol)."""

    def __init__(self, client: MilvusClient, uri: str, name: str, prefix: str, manifest: Manifest) -> None:
        self.name = name
        self.path: Path | None = Path(uri) if _is_lite(uri) else None
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
        fields = [
            "id",
            "source",
            "title",
            "sha256",
            "pages",
            "chunks",
            "added_at",
            "metadata",
            "state",
            "replaces",
            "updated_at",
        ]
        return self._query_all(self._docs, expr or 'id != ""', fields)

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

    def _paths_of(self, doc_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {d: [] for d in doc_ids}
        if not doc_ids:
            return out
        for row in self._query_all(self._paths, _in("doc_id", list(doc_ids)), ["path", "doc_id"]):
            out.setdefault(row["doc_id"], []).append(row["path"])
        return out

    def _infos(self, rows: list[dict[str, Any]]) -> list[DocumentInfo]:
        paths = self._paths_of([r["id"] for r in rows])
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

    # ------------------------------------------------------------------ documents
    def find_by_sha(self, sha256: str) -> DocumentInfo | None:
        visible, _ = self._visibility()
        found = [r for r in visible if r["sha256"] == sha256]
        return self._infos(found)[0] if found else None

    def find_by_path(self, path: str) -> DocumentInfo | None:
        rows = self._client().query(self._paths, filter=f"path == {_lit(path)}", output_fields=["doc_id"])
        if not rows:
            return None
        visible, _ = self._visibility()
        found = [r for r in visible if r["id"] == rows[0]["doc_id"]]
        return self._infos(found)[0] if found else None

    def _delete_doc_data(self, doc_id: str) -> None:
        c = self._client()
        expr = f"doc_id == {_lit(doc_id)}"
        c.delete(self._chunks, filter=expr)
        c.delete(self._pages, filter=expr)
        c.delete(self._paths, filter=expr)

    def _doc_row(
        self, doc: ParsedDocument, doc_id: str, chunks: int, state: str, replaces: str, added_at: float
    ) -> dict[str, Any]:
        return {
            "id": doc_id,
            "source": _truncate_utf8(doc.source, 4096),
            "title": _truncate_utf8(doc.title, 4096),
            "sha256": doc.sha256,
            "pages": len(doc.pages),
            "chunks": chunks,
            "added_at": added_at,
            "updated_at": time.time(),
            "metadata": _truncate_utf8(json.dumps(doc.metadata or {}, ensure_ascii=False, default=str), MAX_VARCHAR),
            "state": state,
            "replaces": replaces,
            "_v": _dummy(),
        }

    def add_document(
        self,
        doc: ParsedDocument,
        chunks: list[Chunk],
        vectors: np.ndarray,
        *,
        replaces: str | None = None,
    ) -> DocumentInfo:
        """Publish a document: 'writing' row, pages + chunks, flush, 'ready' row, drop the replaced one."""
        c = self._client()
        doc_id = chunks[0].doc_id if chunks else str(doc.metadata.get("doc_id") or doc.sha256[:16])
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) and (vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim)):
            raise KnowledgeBaseError(
                f"knowledge base {self.name!r} holds {self.dim}-d vectors; got shape {vectors.shape} for {doc.source}"
            )
        if any(ch.doc_id != doc_id for ch in chunks):
            raise InvalidRequest(f"{doc.source}: chunks belong to more than one document id")
        same = c.query(self._docs, filter=f'sha256 == {_lit(doc.sha256)} and state == "ready"', output_fields=["id"])
        same_ids = {r["id"] for r in same} - self._hidden()
        if same_ids and not same_ids & {doc_id, replaces}:
            # Same content already stored under another id: only record the new path (dedup).
            existing = min(same_ids)
            self.add_path(existing, doc.source)
            return self.get_document(existing)
        replaces = replaces if replaces and replaces != doc_id else ""
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
                "_v": _dummy(),
            }
            for p in doc.pages
            for i, part in enumerate(_split_utf8(p.text, PAGE_PART_BYTES))
        ]
        for start in range(0, len(page_rows), INSERT_BATCH):
            c.insert(self._pages, page_rows[start : start + INSERT_BATCH])
        rows: list[dict[str, Any]] = []
        for i, (chunk, vec) in enumerate(zip(chunks, vectors)):
            rows.append(
                {
                    "id": chunk.id,
                    "doc_id": doc_id,
                    "ordinal": chunk.ordinal if chunk.ordinal else i,
                    "text": _truncate_utf8(chunk.text, MAX_VARCHAR),
                    "page_start": chunk.page_start,
                    "page_end": chunk.page_end,
                    "char_start": chunk.char_start,
                    "char_end": chunk.char_end,
                    "section": _truncate_utf8(chunk.section, 2048),
                    "token_count": chunk.token_count,
                    "text_sha": hashlib.sha256(chunk.text.encode("utf-8")).hexdigest(),
                    "source": _truncate_utf8(doc.source, 4096),
                    "tokens": _truncate_utf8(" ".join(tokenize(chunk.text)), MAX_VARCHAR) or "_",
                    "embedding": vec.tolist(),
                }
            )
            if len(rows) >= INSERT_BATCH:
                c.insert(self._chunks, rows)
                rows = []
        if rows:
            c.insert(self._chunks, rows)
        c.flush(self._chunks)
        c.flush(self._pages)
        c.upsert(self._docs, [self._doc_row(doc, doc_id, len(chunks), "ready", replaces, added_at)])
        c.upsert(self._paths, [{"path": _truncate_utf8(doc.source, 4096), "doc_id": doc_id, "_v": _dummy()}])
        c.flush(self._docs)
        if replaces:
            self._finish_replace(replaces, doc_id)
        return self.get_document(doc_id)

    def _finish_replace(self, old: str, new: str) -> None:
        c = self._client()
        c.delete(self._chunks, filter=f"doc_id == {_lit(old)}")
        c.delete(self._pages, filter=f"doc_id == {_lit(old)}")
        # Paths still pointing at the old version now belong to the new one.
        moved = self._query_all(self._paths, f"doc_id == {_lit(old)}", ["path"])
        if moved:
            c.upsert(self._paths, [{"path": r["path"], "doc_id": new, "_v": _dummy()} for r in moved])
        c.delete(self._docs, ids=[old])
        rows = c.query(self._docs, filter=f"id == {_lit(new)}", output_fields=["*"])
        if rows:
            row = {k: v for k, v in rows[0].items() if k in self._doc_fields()}
            row["replaces"] = ""
            row["_v"] = _dummy()
            c.upsert(self._docs, [row])
        c.flush(self._docs)

    @staticmethod
    def _doc_fields() -> set[str]:
        return {
            "id",
            "source",
            "title",
            "sha256",
            "pages",
            "chunks",
            "added_at",
            "updated_at",
            "metadata",
            "state",
            "replaces",
        }

    def recover(self, stale_after_s: float = STALE_WRITE_S) -> dict[str, int]:
        """Finish interrupted replaces and drop writes abandoned for longer than `stale_after_s`."""
        rows = self._doc_rows()
        finished = dropped = 0
        for r in rows:
            if r["state"] == "ready" and r["replaces"]:
                self._finish_replace(r["replaces"], r["id"])
                finished += 1
            elif r["state"] != "ready" and time.time() - float(r["updated_at"]) > stale_after_s:
                self._delete_doc_data(r["id"])
                self._client().delete(self._docs, ids=[r["id"]])
                dropped += 1
        return {"finished_replaces": finished, "dropped_writes": dropped}

    def add_path(self, doc_id: str, path: str) -> None:
        self.get_document(doc_id)
        c = self._client()
        c.upsert(self._paths, [{"path": _truncate_utf8(path, 4096), "doc_id": doc_id, "_v": _dummy()}])
        c.flush(self._paths)

    def remove_path(self, path: str) -> None:
        """Forget one path; the document itself stays."""
        c = self._client()
        c.delete(self._paths, ids=[_truncate_utf8(path, 4096)])
        c.flush(self._paths)

    def remove_document(self, doc_id: str) -> None:
        self.get_document(doc_id)
        c = self._client()
        # The row goes first: readers stop seeing the document before its chunks disappear.
        c.delete(self._docs, ids=[doc_id])
        c.flush(self._docs)
        self._delete_doc_data(doc_id)

    def list_documents(self) -> list[DocumentInfo]:
        visible, _ = self._visibility()
        return self._infos(visible)

    def get_document(self, doc_id: str) -> DocumentInfo:
        visible, _ = self._visibility()
        found = [r for r in visible if r["id"] == doc_id]
        if not found:
            raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")
        return self._infos(found)[0]

    def page_text(self, doc_id: str, page: int) -> str:
        rows = self._client().query(
            self._pages, filter=f"doc_id == {_lit(doc_id)} and number == {int(page)}", output_fields=["part", "text"]
        )
        if not rows:
            raise DocumentNotFound(f"page {page} of document {doc_id!r} is not in knowledge base {self.name!r}")
        return "".join(r["text"] for r in sorted(rows, key=lambda r: r["part"]))

    def document_pages(self, doc_id: str) -> list[tuple[int, str]]:
        rows = self._query_all(self._pages, f"doc_id == {_lit(doc_id)}", ["number", "part", "text"])
        pages: dict[int, list[tuple[int, str]]] = {}
        for r in rows:
            pages.setdefault(int(r["number"]), []).append((int(r["part"]), r["text"]))
        return [(n, "".join(t for _, t in sorted(parts))) for n, parts in sorted(pages.items())]

    def document_metadata(self, doc_id: str) -> dict[str, Any]:
        rows = self._client().query(self._docs, filter=f"id == {_lit(doc_id)}", output_fields=["metadata"])
        if not rows:
            raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")
        return dict(json.loads(rows[0]["metadata"]))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        """All chunks of visible documents with their stored vectors, document by document."""
        visible, _ = self._visibility()
        for r in sorted(visible, key=lambda r: r["id"]):
            rows = self._query_all(self._chunks, f"doc_id == {_lit(r['id'])}", [*_CHUNK_FIELDS, "embedding"])
            rows.sort(key=lambda e: int(e["ordinal"]))
            for start in range(0, len(rows), batch):
                part = rows[start : start + batch]
                yield [_entity_to_chunk(e) for e in part], np.asarray([e["embedding"] for e in part], dtype=np.float32)

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        rows = self._query_all(self._chunks, f"doc_id == {_lit(doc_id)}", _CHUNK_FIELDS)
        return sorted((_entity_to_chunk(r) for r in rows), key=lambda ch: ch.ordinal)

    # ------------------------------------------------------------------ embedding cache
    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        hashes = list(dict.fromkeys(text_hashes))
        for start in range(0, len(hashes), 1000):
            rows = self._client().query(
                self._chunks,
                filter=_in("text_sha", hashes[start : start + 1000]),
                output_fields=["text_sha", "embedding"],
            )
            for r in rows:
                out.setdefault(r["text_sha"], np.asarray(r["embedding"], dtype=np.float32))
        return out

    # ------------------------------------------------------------------ search
    def _filter_expr(self, flt: SearchFilter | None) -> str | None:
        """Filter expression for chunk searches; None when the filter matches nothing."""
        hidden = self._hidden()
        clauses: list[str] = []
        if hidden:
            clauses.append(f"not ({_in('doc_id', sorted(hidden))})")
        if flt:
            if flt.metadata:
                visible, _ = self._visibility()
                allowed = {
                    r["id"] for r in visible if _metadata_matches(json.loads(r["metadata"] or "{}"), flt.metadata)
                }
                if flt.doc_ids:
                    allowed &= set(flt.doc_ids)
            else:
                allowed = set(flt.doc_ids) - hidden
            if not allowed:
                return None
            clauses.append(_in("doc_id", sorted(allowed)))
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
            output_fields=_CHUNK_FIELDS,
            search_params={"metric_type": metric, "params": params},
            consistency_level=CONSISTENCY,
        )
        return [(_entity_to_chunk(h["entity"] | {"id": h["id"]}), float(h["distance"])) for h in res[0]]

    def dense_search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        expr = self._filter_expr(flt)
        if expr is None or k <= 0:
            return []
        found = self._search(
            [np.asarray(vector, dtype=np.float32).ravel().tolist()], "embedding", "IP", k, expr, {"ef": max(64, 2 * k)}
        )
        return [Hit(chunk=ch, score=s, rank=i + 1, retriever="dense") for i, (ch, s) in enumerate(found)]

    def exact_search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Brute force over every stored vector (the reference for ANN recall)."""
        visible, _ = self._visibility()
        ids: list[str] = []
        vecs: list[list[float]] = []
        for r in visible:
            for row in self._query_all(self._chunks, f"doc_id == {_lit(r['id'])}", ["id", "embedding"]):
                ids.append(row["id"])
                vecs.append(row["embedding"])
        if not ids:
            return []
        scores = np.asarray(vecs, dtype=np.float32) @ np.asarray(vector, dtype=np.float32).ravel()
        order = np.argsort(-scores)[:k]
        chunks = {ch.id: ch for ch in self.get_chunks([ids[i] for i in order])}
        return [
            Hit(chunk=chunks[ids[i]], score=float(scores[i]), rank=n + 1, retriever="dense")
            for n, i in enumerate(order)
        ]

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
        reqs = [
            AnnSearchRequest(
                [np.asarray(vector, dtype=np.float32).ravel().tolist()],
                "embedding",
                {"metric_type": "IP", "params": {"ef": max(64, 2 * candidates)}},
                candidates,
                expr=expr or None,
            )
        ]
        if terms:
            reqs.append(AnnSearchRequest([terms], "sparse", {"metric_type": "BM25"}, candidates, expr=expr or None))
        res = self._client().hybrid_search(
            self._chunks, reqs, RRFRanker(rrf_k), limit=k, output_fields=_CHUNK_FIELDS, consistency_level=CONSISTENCY
        )
        return [
            Hit(
                chunk=_entity_to_chunk(h["entity"] | {"id": h["id"]}),
                score=float(h["distance"]),
                rank=i + 1,
                retriever="hybrid",
            )
            for i, h in enumerate(res[0])
        ]

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        by_id: dict[str, Chunk] = {}
        ids = list(chunk_ids)
        for start in range(0, len(ids), 1000):
            for r in self._client().query(
                self._chunks, filter=_in("id", ids[start : start + 1000]), output_fields=_CHUNK_FIELDS
            ):
                by_id[r["id"]] = _entity_to_chunk(r)
        return [by_id[c] for c in chunk_ids if c in by_id]

    def neighbours(self, chunk: Chunk, n: int) -> list[Chunk]:
        if n <= 0:
            return []
        me = self._client().query(self._chunks, filter=f"id == {_lit(chunk.id)}", output_fields=["doc_id", "ordinal"])
        if not me:
            return []
        doc_id, ordinal = me[0]["doc_id"], int(me[0]["ordinal"])
        rows = self._client().query(
            self._chunks,
            filter=f"doc_id == {_lit(doc_id)} and ordinal >= {ordinal - n} and ordinal <= {ordinal + n}",
            output_fields=_CHUNK_FIELDS,
        )
        return sorted((_entity_to_chunk(r) for r in rows if r["id"] != chunk.id), key=lambda ch: ch.ordinal)

    # ------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        visible, hidden = self._visibility()
        out: dict[str, Any] = {
            "documents": len(visible),
            "chunks": sum(int(r["chunks"]) for r in visible),
            "pages": sum(int(r["pages"]) for r in visible),
            "name": self.name,
            "embedder": self.embedder_id,
            "dim": self.dim,
            "backend": BACKEND,
            "index": {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "keyword": "bm25"},
            "collections": [self._chunks, self._docs, self._pages, self._paths],
            "uri": self.uri,
            "pending_documents": len(hidden),
        }
        if self.path is not None and self.path.exists():
            out["disk_bytes"] = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return out

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


def _create_kb_collections(c: MilvusClient, prefix: str, dim: int, *, lite: bool) -> None:
    from pymilvus import DataType, Function, FunctionType

    def small(schema_fields: list[tuple[str, Any, dict[str, Any]]], pk: str) -> Any:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        for fname, ftype, kw in schema_fields:
            schema.add_field(fname, ftype, is_primary=(fname == pk), **kw)
        schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field in every collection
        return schema

    def flat_index() -> Any:
        ip = c.prepare_index_params()
        ip.add_index("_v", index_type="FLAT", metric_type="L2")
        return ip

    vc = DataType.VARCHAR
    docs = small(
        [
            ("id", vc, {"max_length": 512}),
            ("source", vc, {"max_length": 4096 * 4}),
            ("title", vc, {"max_length": 4096 * 4}),
            ("sha256", vc, {"max_length": 64}),
            ("pages", DataType.INT64, {}),
            ("chunks", DataType.INT64, {}),
            ("added_at", DataType.DOUBLE, {}),
            ("updated_at", DataType.DOUBLE, {}),
            ("metadata", vc, {"max_length": MAX_VARCHAR}),
            ("state", vc, {"max_length": 16}),
            ("replaces", vc, {"max_length": 512}),
        ],
        "id",
    )
    pages = small(
        [
            ("id", vc, {"max_length": 600}),
            ("doc_id", vc, {"max_length": 512}),
            ("number", DataType.INT64, {}),
            ("part", DataType.INT64, {}),
            ("text", vc, {"max_length": MAX_VARCHAR}),
        ],
        "id",
    )
    paths = small([("path", vc, {"max_length": 4096 * 4}), ("doc_id", vc, {"max_length": 512})], "path")
    for suffix, schema in (("docs", docs), ("pages", pages), ("paths", paths)):
        if not c.has_collection(f"{prefix}_{suffix}"):
            c.create_collection(
                f"{prefix}_{suffix}", schema=schema, index_params=flat_index(), consistency_level=CONSISTENCY
            )

    if c.has_collection(f"{prefix}_chunks"):
        return
    # The analyzer's tokens arrive space-joined: Milvus ≥2.5 splits them with its whitespace tokenizer;
    # Milvus Lite has only 'standard' and 'jieba', and 'standard' (\w+, lower-case) keeps our tokens
    # except that it splits the few containing punctuation (3.5 -> 3, 5) — the same at query time.
    analyzer = {"tokenizer": "standard"} if lite else {"tokenizer": "whitespace"}
    schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", vc, is_primary=True, max_length=512)
    schema.add_field("doc_id", vc, max_length=512)
    schema.add_field("ordinal", DataType.INT64)
    schema.add_field("text", vc, max_length=MAX_VARCHAR)
    schema.add_field("page_start", DataType.INT64)
    schema.add_field("page_end", DataType.INT64)
    schema.add_field("char_start", DataType.INT64)
    schema.add_field("char_end", DataType.INT64)
    schema.add_field("section", vc, max_length=2048 * 4)
    schema.add_field("token_count", DataType.INT64)
    schema.add_field("text_sha", vc, max_length=64)
    schema.add_field("source", vc, max_length=4096 * 4)
    schema.add_field("tokens", vc, max_length=MAX_VARCHAR, enable_analyzer=True, analyzer_params=analyzer)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["tokens"], output_field_names=["sparse"]
        )
    )
    ip = c.prepare_index_params()
    ip.add_index(
        "embedding", index_type="HNSW", metric_type="IP", params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    )
    ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    ip.add_index("doc_id", index_type="INVERTED")
    ip.add_index("text_sha", index_type="INVERTED")
    try:
        c.create_collection(f"{prefix}_chunks", schema=schema, index_params=ip, consistency_level=CONSISTENCY)
    except Exception as exc:
        raise KnowledgeBaseError(f"cannot create Milvus collection {prefix}_chunks: {exc}") from exc


def _load(c: MilvusClient, collection: str) -> None:
    """Collections must be loaded to be searched; after a restart (or in a new process) they are not."""
    state = c.get_load_state(collection).get("state")
    if "Loaded" not in str(state):
        c.load_collection(collection)


class MilvusBackend:
    """Creates, lists and drops knowledge bases in one Milvus instance (settings.store.url)."""

    name = BACKEND

    def _uri(self, settings: Settings) -> str:
        return settings.store.url or default_uri(settings)

    def _registry(self, settings: Settings) -> MilvusClient:
        from pymilvus import DataType

        c = _client(self._uri(settings))
        if not c.has_collection(REGISTRY):
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=1024)
            schema.add_field("prefix", DataType.VARCHAR, max_length=64)
            schema.add_field("manifest", DataType.VARCHAR, max_length=MAX_VARCHAR)
            schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
            ip = c.prepare_index_params()
            ip.add_index("_v", index_type="FLAT", metric_type="L2")
            c.create_collection(REGISTRY, schema=schema, index_params=ip, consistency_level=CONSISTENCY)
        _load(c, REGISTRY)
        return c

    def open(
        self, settings: Settings, name: str, *, embedder_id: str | None, dim: int | None, create: bool
    ) -> MilvusStore:
        uri = self._uri(settings)
        c = self._registry(settings)
        rows = c.query(REGISTRY, filter=f"name == {_lit(name)}", output_fields=["prefix", "manifest"])
        if not rows:
            if not create:
                raise KnowledgeBaseNotFound(f"knowledge base {name!r} does not exist in Milvus at {uri}")
            manifest = Manifest.for_new_kb(
                name,
                BACKEND,
                embedder_id,
                dim,
                settings.chunking.model_dump(),
                {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
            )
            prefix = prefix_for(name)
            _create_kb_collections(c, prefix, int(dim), lite=_is_lite(uri))
            c.upsert(
                REGISTRY, [{"name": name, "prefix": prefix, "manifest": json.dumps(manifest.to_json()), "_v": _dummy()}]
            )
            c.flush(REGISTRY)
        else:
            prefix = rows[0]["prefix"]
            manifest = Manifest.from_json(json.loads(rows[0]["manifest"]), where=f"{REGISTRY}[{name!r}]")
            check_embedder(manifest, embedder_id, dim, name)
            _create_kb_collections(
                c, prefix, manifest.dim, lite=_is_lite(uri)
            )  # no-op unless a crash interrupted creation
        for suffix in ("chunks", "docs", "pages", "paths"):
            _load(c, f"{prefix}_{suffix}")
        return MilvusStore(c, uri, name, prefix, manifest)

    def list_names(self, settings: Settings) -> list[str]:
        c = self._registry(settings)
        return sorted(r["name"] for r in c.query(REGISTRY, filter='name != ""', output_fields=["name"]))

    def exists(self, settings: Settings, name: str) -> bool:
        c = self._registry(settings)
        return bool(c.query(REGISTRY, filter=f"name == {_lit(name)}", output_fields=["name"]))

    def drop(self, settings: Settings, name: str) -> None:
        c = self._registry(settings)
        rows = c.query(REGISTRY, filter=f"name == {_lit(name)}", output_fields=["prefix"])
        if not rows:
            return
        c.delete(REGISTRY, ids=[name])
        c.flush(REGISTRY)
        for suffix in ("chunks", "docs", "pages", "paths"):
            if c.has_collection(f"{rows[0]['prefix']}_{suffix}"):
                c.drop_collection(f"{rows[0]['prefix']}_{suffix}")
