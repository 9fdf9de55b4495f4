"""Optional cross-encoder reranking (sentence-transformers CrossEncoder from a local folder or name)."""

from __future__ import annotations

import threading
from pathlib import Path

from rag.errors import ModelNotAvailable
from rag.records import Hit


class CrossEncoderReranker:
    """Re-scores (query, chunk) pairs with a cross-encoder; loaded once, used under a lock."""

    def __init__(self, name_or_path: str, max_length: int = 512) -> None:
        local = name_or_path.startswith(("/", ".", "~")) or "\\" in name_or_path
        if local and not Path(name_or_path).expanduser().exists():
            raise ModelNotAvailable(
                f"reranker {name_or_path!r}: no such local folder (set retrieval.reranker to a cross-encoder folder)"
            )
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise ModelNotAvailable(
                "the reranker needs sentence-transformers: pip install sentence-transformers"
            ) from exc
        try:
            self._model = CrossEncoder(
                str(Path(name_or_path).expanduser()) if local else name_or_path,
                max_length=max_length,
                device="cpu",
            )
        except (OSError, ValueError) as exc:
            hint = "" if Path(name_or_path).exists() else " (no such local folder; model hubs are offline)"
            raise ModelNotAvailable(f"reranker {name_or_path!r} cannot be loaded{hint}: {exc}") from exc
        self.name = name_or_path
        self._lock = threading.Lock()

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        with self._lock:
            raw = self._model.predict([(query, h.chunk.text) for h in hits], show_progress_bar=False)
        scores = [float(s) if not hasattr(s, "__len__") else float(s[-1]) for s in raw]
        ranked = sorted(zip(hits, scores), key=lambda pair: -pair[1])
        out: list[Hit] = []
        for rank, (hit, score) in enumerate(ranked, start=1):
            hit.scores["rerank"] = score
            out.append(
                Hit(
                    chunk=hit.chunk,
                    score=score,
                    rank=rank,
                    retriever="rerank",
                    scores=hit.scores,
                )
            )
        return out
