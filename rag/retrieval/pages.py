"""Page-level fusion: the evidence is a page, so chunks are ranked by how strongly their page is found.

Each ranking (dense, keyword, and the routed searches) votes for pages as RRF does for chunks:
- "max": a page's rank in a ranking is the rank of its best chunk there;
- "sum": every chunk of the page found by a ranking adds its own reciprocal rank, so a page that
  several chunks point to rises (a table split over chunks, a section's text and its table).
The chunk list is then re-ordered: the best chunk of the best page first, then the best chunk of the
next page, and the pages' other chunks after every page had its turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.records import Hit
from rag.retrieval.fusion import Weight, weight_of

PAGE_AGGREGATIONS = ("off", "max", "sum")


def _page(hit: Hit) -> tuple[str, int]:
    return hit.chunk.doc_id, hit.chunk.page_start


def page_scores(
    rankings: Sequence[tuple[str, Weight, list[Hit]]], rrf_k: int, how: str
) -> dict[tuple[str, int], float]:
    scores: dict[tuple[str, int], float] = {}
    for _name, weight, hits in rankings:
        if not callable(weight) and weight <= 0:
            continue
        seen: set[tuple[str, int]] = set()
        page_rank = 0
        for rank, hit in enumerate(hits, start=1):
            key = _page(hit)
            if how == "max":
                if key in seen:
                    continue
                seen.add(key)
                page_rank += 1
                scores[key] = scores.get(key, 0.0) + weight_of(weight, hit) / (rrf_k + page_rank)
            else:
                scores[key] = scores.get(key, 0.0) + weight_of(weight, hit) / (rrf_k + rank)
    return scores


def order_by_page(fused: list[Hit], scores: dict[tuple[str, int], float]) -> list[Hit]:
    """Fused chunk hits re-ordered page first (see the module docstring); ranks renumbered."""
    by_page: dict[tuple[str, int], list[Hit]] = {}
    for hit in fused:  # already in chunk-fusion order: each page's list is best chunk first
        by_page.setdefault(_page(hit), []).append(hit)
    pages = sorted(by_page, key=lambda p: (-scores.get(p, 0.0), by_page[p][0].rank))
    firsts = [by_page[p][0] for p in pages]
    rest = sorted((h for p in pages for h in by_page[p][1:]), key=lambda h: (-scores.get(_page(h), 0.0), h.rank))
    out = firsts + rest
    for rank, hit in enumerate(out, start=1):
        hit.scores["page"] = scores.get(_page(hit), 0.0)
        hit.score = hit.scores["page"]
        hit.rank = rank
    return out
