"""Rank fusion and near-duplicate removal over retriever hit lists."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.records import Hit

_SPACE_RE = re.compile(r"\s+")
DUPLICATE_JACCARD = 0.9  # share of common character 4-grams above which two chunks count as the same text


Weight = float | Callable[[Hit], float]


def weight_of(weight: Weight, hit: Hit) -> float:
    return weight(hit) if callable(weight) else weight


def rrf_fuse(rankings: Sequence[tuple[str, Weight, list[Hit]]], rrf_k: int) -> list[Hit]:
    """Reciprocal-rank fusion: score(chunk) = sum over rankings of weight / (rrf_k + rank).

    `rankings` is [(name, weight, hits)], a weight being a number or a function of the hit (a routed
    search counts as much as its document matched); each fused Hit keeps the per-retriever scores.
    """
    fused: dict[str, Hit] = {}
    for name, weight, hits in rankings:
        if not callable(weight) and weight <= 0:
            continue
        for rank, hit in enumerate(hits, start=1):
            entry = fused.get(hit.chunk.id)
            if entry is None:
                entry = Hit(chunk=hit.chunk, score=0.0, rank=0, retriever="hybrid", scores={})
                fused[hit.chunk.id] = entry
            entry.score += weight_of(weight, hit) / (rrf_k + rank)
            entry.scores[name] = hit.score
            entry.scores[f"{name}_rank"] = float(rank)
    out = sorted(fused.values(), key=lambda h: (-h.score, h.chunk.id))
    for rank, hit in enumerate(out, start=1):
        hit.scores["rrf"] = hit.score
        hit.rank = rank
    return out


def _shingles(text: str) -> set[str]:
    norm = _SPACE_RE.sub("", text.lower())
    if len(norm) < 4:
        return {norm}
    return {norm[i : i + 4] for i in range(len(norm) - 3)}


def drop_near_duplicates(hits: list[Hit], threshold: float = DUPLICATE_JACCARD, limit: int | None = None) -> list[Hit]:
    """Keep the best-ranked of chunks whose texts are (nearly) identical, e.g. repeated boilerplate.

    Stops once `limit` hits are kept (only the top of the list is ever used).
    """
    kept: list[Hit] = []
    kept_sets: list[set[str]] = []
    for hit in hits:
        if limit is not None and len(kept) >= limit:
            break
        grams = _shingles(hit.chunk.text)
        duplicate = False
        for other in kept_sets:
            small, big = sorted((len(grams), len(other)))
            if big and small / big < threshold:  # Jaccard can't reach the threshold
                continue
            inter = len(grams & other)
            if inter and inter / (len(grams) + len(other) - inter) >= threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append(hit)
            kept_sets.append(grams)
    for rank, hit in enumerate(kept, start=1):
        hit.rank = rank
    return kept
