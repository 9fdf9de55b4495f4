"""Retrieval over a knowledge base: dense, keyword (BM25), hybrid RRF, rerank, relevance floor.

`make_retriever(store, embedder, settings.retrieval).retrieve(query, k, flt)` -> Retrieval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError
from rag.protocols import Embedder, Retriever, Store
from rag.records import Hit
from rag.retrieval.hybrid import HybridRetriever
from rag.settings import RetrievalSettings

if TYPE_CHECKING:
    from rag.retrieval.translate import GeneratorSource

__all__ = ["HybridRetriever", "explain_hit", "hit_to_dict", "make_retriever"]


def make_retriever(
    store: Store,
    embedder: Embedder,
    settings: RetrievalSettings,
    generator: GeneratorSource | None = None,
) -> Retriever:
    """The retriever described by `settings` (mode, fusion weights, reranker, neighbours, floor).

    `generator` (the LLM, or a function that loads it on first use) is needed only with
    query_translation="llm"; the LLM is then called only for a cross-language question."""
    translator = None
    if settings.query_translation == "llm":
        if generator is None:
            raise ConfigError(
                "retrieval.query_translation='llm' needs the LLM where the retriever is built "
                "(make_retriever(..., generator=...)); set it to 'off' to search without translating"
            )
        from rag.retrieval.translate import QueryTranslator

        translator = QueryTranslator(generator)
    return HybridRetriever(store, embedder, settings, translator=translator)


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


def explain_hit(scores: dict[str, float]) -> str:
    """One line saying why a hit ranks where it does: each ranking's rank and score, routing, page."""
    parts = []
    for name, label in (
        ("dense", "dense"),
        ("keyword", "keyword"),
        ("dense_routed", "dense in routed docs"),
        ("keyword_routed", "keyword in routed docs"),
        ("period", "header year"),
        ("concepts", "statement wording"),
        ("concepts_routed", "statement wording in routed docs"),
        ("dense_translated", "dense of the translated question"),
        ("keyword_translated", "keyword of the translated question"),
    ):
        rank = scores.get(f"{name}_rank")
        if rank is not None:
            parts.append(f"{label} #{int(rank)} ({scores.get(name, 0.0):.3f})")
        elif name in ("dense", "keyword"):
            parts.append(f"{label} –")
    if scores.get("routing"):
        parts.append(f"routing match {scores['routing']:.2f}")
    if "page" in scores:
        parts.append(f"page score {scores['page']:.4f}")
    if "rrf" in scores:
        parts.append(f"fused {scores['rrf']:.4f}")
    return " · ".join(parts)
