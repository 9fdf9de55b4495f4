"""Retrieval over a knowledge base: dense, keyword (BM25), hybrid RRF, rerank, relevance floor.

`make_retriever(store, embedder, settings.retrieval).retrieve(query, k, flt)` -> Retrieval.
"""

from __future__ import annotations

from typing import Any

from rag.protocols import Embedder, Retriever, Store
from rag.records import Hit
from rag.retrieval.hybrid import HybridRetriever
from rag.settings import RetrievalSettings

__all__ = ["HybridRetriever", "hit_to_dict", "make_retriever"]


def make_retriever(store: Store, embedder: Embedder, settings: RetrievalSettings) -> Retriever:
    """The retriever described by `settings` (mode, fusion weights, reranker, neighbours, floor)."""
    return HybridRetriever(store, embedder, settings)


def hit_to_dict(hit: Hit) -> dict[str, Any]:
    """JSON shape of a hit: {"doc","page","text","score","chunk_id", ...} (page is 1-based)."""
    c = hit.chunk
    return {
        "doc": c.doc,
        "page": c.page_start,
        "text": c.text,
        "score": round(float(hit.score), 6),
        "chunk_id": c.id,
        "doc_id": c.doc_id,
        "page_end": c.page_end,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "section": c.section,
        "rank": hit.rank,
        "retriever": hit.retriever,
        "scores": {k: round(float(v), 6) for k, v in hit.scores.items()},
    }
