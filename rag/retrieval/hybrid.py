"""Dense + keyword retrieval fused with RRF, then de-duplication, optional rerank, neighbours, floor.

The relevance floor sees both rankings: retrieval reports no evidence only when the best *dense
cosine* is below settings.min_score *and* no top keyword hit covers settings.min_keyword_coverage
of the question's content words (Chinese: character bigrams). BM25 scores are unbounded and fused
scores are ranks, so the keyword side is judged by coverage, which is comparable across queries;
a chunk that matches the question's words is never refused unseen. How the defaults were
calibrated: rag/settings/retrieval.py (RetrievalSettings) and bench/grounding_calibrate.py.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from rag.lang import detect_language
from rag.protocols import Embedder, Retrieval, SearchFilter, Store
from rag.records import Hit
from rag.retrieval.concepts import concept_query
from rag.retrieval.fusion import drop_near_duplicates, rrf_fuse
from rag.retrieval.pages import order_by_page, page_scores
from rag.retrieval.periods import expand_periods, header_years, question_years
from rag.retrieval.routing import DocumentRouter
from rag.settings import RetrievalSettings
from rag.text.features import features, question_features

if TYPE_CHECKING:
    from rag.retrieval.translate import QueryTranslator

KEYWORD_FLOOR_HITS = 3  # keyword hits whose coverage of the question the floor looks at


def _scoped(doc_ids: list[str], flt: SearchFilter | None) -> SearchFilter | None:
    """The routed documents within the caller's filter; None when routing would not narrow anything."""
    if not doc_ids:
        return None
    if flt and flt.doc_ids:
        doc_ids = [d for d in doc_ids if d in set(flt.doc_ids)]
        if not doc_ids or len(doc_ids) == len(flt.doc_ids):
            return None
    return SearchFilter(doc_ids=doc_ids, metadata=dict(flt.metadata) if flt else {})


def keyword_coverage(query: str, hits: list[Hit]) -> float:
    """The largest share of the question's content grams that one of `hits` contains."""
    wanted = question_features(query).grams
    if not wanted:
        return 0.0
    return max((len(wanted & features(h.chunk.text).grams) / len(wanted) for h in hits), default=0.0)


class HybridRetriever:
    """`retrieve(query, k, flt)` per settings.mode: "hybrid" (default), "dense" or "keyword"."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        settings: RetrievalSettings,
        reranker: object | None = None,
        translator: QueryTranslator | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self._reranker = reranker
        self.translator = translator  # retrieval.query_translation="llm" (rag/retrieval/translate.py)
        self._router: DocumentRouter | None = None

    @property
    def router(self) -> DocumentRouter:
        if self._router is None:
            self._router = DocumentRouter(self.store)
        return self._router

    def _snapshot(self) -> AbstractContextManager[object]:
        return self.store.snapshot()

    @property
    def reranker(self):  # type: ignore[no-untyped-def]
        if self._reranker is None and self.settings.reranker:
            from rag.retrieval.rerank import CrossEncoderReranker

            self._reranker = CrossEncoderReranker(self.settings.reranker)
        return self._reranker

    def retrieve(self, query: str, k: int, flt: SearchFilter | None = None) -> Retrieval:
        s = self.settings
        timings: dict[str, float] = {}
        start = time.perf_counter()
        pool = max(s.candidates, k)
        dense: list[Hit] = []
        keyword: list[Hit] = []
        vector = None
        if s.mode in ("dense", "hybrid"):
            t = time.perf_counter()
            vector = self.embedder.embed_query(query)
            timings["embed_ms"] = (time.perf_counter() - t) * 1000
        # Both searches read one snapshot where the backend offers it (pgvector): a writer committing
        # between them must not make one answer mix the old and new version of a document.
        with self._snapshot():
            if vector is not None:
                t = time.perf_counter()
                dense = self.store.dense_search(vector, pool, flt)
                timings["dense_ms"] = (time.perf_counter() - t) * 1000
            keyword_query = query
            if s.periods and (extra := expand_periods(query)):
                keyword_query = f"{query} {extra}"
            if s.mode in ("keyword", "hybrid"):
                t = time.perf_counter()
                keyword = self.store.keyword_search(keyword_query, pool, flt)
                timings["keyword_ms"] = (time.perf_counter() - t) * 1000
            rankings = [("dense", s.dense_weight, dense), ("keyword", s.keyword_weight, keyword)]
            concepts = concept_query(query) if s.concepts and s.mode == "hybrid" else ""
            if concepts:
                t = time.perf_counter()
                rankings.append(("concepts", s.concept_weight, self.store.keyword_search(concepts, pool, flt)))
                timings["concepts_ms"] = (time.perf_counter() - t) * 1000
            route = None
            if s.routing and s.mode == "hybrid":
                t = time.perf_counter()
                route = self.router.route(query)
                scope = _scoped(route.doc_ids, flt) if route.confident else None
                if scope is not None:
                    # A routed search counts as much as its document matched the question.
                    match = route.scores

                    def routed(h: Hit) -> float:
                        return s.routed_weight * match.get(h.chunk.doc_id, 0.0)

                    if vector is not None:
                        rankings.append(("dense_routed", routed, self.store.dense_search(vector, pool, scope)))
                    rankings.append(("keyword_routed", routed, self.store.keyword_search(keyword_query, pool, scope)))
                    if concepts:
                        found = self.store.keyword_search(concepts, pool, scope)
                        rankings.append(("concepts_routed", lambda h: s.concept_weight * routed(h), found))
                timings["routing_ms"] = (time.perf_counter() - t) * 1000
            # --- query translation (rag/retrieval/translate.py): a cross-language question's translation
            # adds its dense and keyword rankings; its side of the relevance floor is counted below.
            translation = None
            if self.translator is not None and s.mode == "hybrid":
                translation = self.translator.search(query, dense + keyword, self.store, self.embedder, s, pool, flt)
                if translation is not None:
                    rankings += translation.rankings
                    timings["translate_ms"] = translation.translate_ms
                    timings["translated_search_ms"] = translation.search_ms
            # --- end query translation

        t = time.perf_counter()
        if s.mode == "hybrid":
            if s.periods and (years := question_years(query)):
                # Tables whose header names the question's year, in the order the searches found them.
                best: dict[str, tuple[int, Hit]] = {}
                for _, _, ranked in rankings:
                    for rank, h in enumerate(ranked):
                        if h.chunk.id not in best or rank < best[h.chunk.id][0]:
                            best[h.chunk.id] = (rank, h)
                matching = [
                    h for _, h in sorted(best.values(), key=lambda rh: rh[0]) if header_years(h.chunk.text) & years
                ]
                rankings.append(("period", s.period_weight, matching))
            hits = rrf_fuse(rankings, s.rrf_k)
            if route is not None:
                for hit in hits:
                    hit.scores["routing"] = route.scores.get(hit.chunk.doc_id, 0.0) if route.confident else 0.0
            if s.page_fusion != "off":
                hits = order_by_page(hits, page_scores(rankings, s.rrf_k, s.page_fusion))
        else:
            hits = dense or keyword
            for hit in hits:
                hit.scores[hit.retriever] = hit.score
        rerank = self.reranker is not None
        hits = drop_near_duplicates(hits, limit=max(pool // 2, k) if rerank else k)
        timings["fuse_ms"] = (time.perf_counter() - t) * 1000

        if rerank and hits:
            t = time.perf_counter()
            hits = self.reranker.rerank(query, hits)
            timings["rerank_ms"] = (time.perf_counter() - t) * 1000

        hits = hits[:k]
        if s.neighbours and hits:
            hits = self._with_neighbours(hits, s.neighbours)

        best = max((h.score for h in dense), default=0.0)
        coverage = keyword_coverage(query, keyword[:KEYWORD_FLOOR_HITS])
        if translation is not None:  # query translation: evidence in the other language counts too
            best, coverage = max(best, translation.best_score), max(coverage, translation.keyword_coverage)
        unembedded = self._unembedded() if s.mode != "keyword" else 0
        if s.mode == "keyword":
            no_evidence = not hits
        elif unembedded and keyword:
            # Chunks still waiting for their vector cannot score on the dense side, so a low dense best
            # says nothing about them: while the KB is being embedded, keyword hits are never refused
            # here (the answer step still checks every citation against its page).
            no_evidence = False
        else:
            no_evidence = (not dense or best < s.min_score) and coverage < s.min_keyword_coverage
        timings["total_ms"] = (time.perf_counter() - start) * 1000
        return Retrieval(
            hits=hits,
            no_evidence=no_evidence,
            best_score=float(best),
            timings=timings,
            keyword_coverage=coverage,
            languages=frozenset(detect_language(h.chunk.text) for h in dense + keyword),
            unembedded=unembedded,
        )

    def _unembedded(self) -> int:
        """Chunks without a vector yet (a store without a queue has none)."""
        counts = getattr(self.store, "embedding_counts", None)
        if counts is None:
            return 0
        embedded, chunks = counts()
        return max(0, chunks - embedded)

    def _with_neighbours(self, hits: list[Hit], n: int) -> list[Hit]:
        """Add adjacent chunks on the same page(s) right after each hit (retriever="neighbour")."""
        seen = {h.chunk.id for h in hits}
        out: list[Hit] = []
        for hit in hits:
            out.append(hit)
            for nb in self.store.neighbours(hit.chunk, n):
                same_page = nb.page_start <= hit.chunk.page_end and nb.page_end >= hit.chunk.page_start
                if nb.id in seen or not same_page:
                    continue
                seen.add(nb.id)
                out.append(
                    Hit(
                        chunk=nb,
                        score=hit.score,
                        rank=0,
                        retriever="neighbour",
                        scores={"anchor_rank": float(hit.rank)},
                    )
                )
        for rank, hit in enumerate(out, start=1):
            hit.rank = rank
        return out
