"""Any sentence-transformers model by local folder or hub name (M3E, text2vec, bge, MiniLM...).

Offline by default (HF_HUB_OFFLINE=1): a hub name works only if it is already in the user's cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.embedders.prefixes import resolve_prefixes
from rag.errors import ConfigError, ModelNotAvailable
from rag.settings import EmbedderSettings


def pick_device(wanted: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU (then 'mps' on Apple), else 'cpu'; anything else as given."""
    if wanted != "auto":
        return wanted
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


class SentenceTransformerEmbedder:
    def __init__(self, name_or_path: str, settings: EmbedderSettings) -> None:
        if not name_or_path:
            raise ConfigError("sentence-transformers embedder needs a model: 'sentence-transformers:<name-or-path>'")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelNotAvailable(
                "the sentence-transformers embedder needs the package: pip install torch==2.13.0 sentence-transformers"
            ) from exc
        try:
            self._model = SentenceTransformer(name_or_path, device=pick_device(settings.device))
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(
                f"sentence-transformers model {name_or_path!r} is not available offline: give a local folder "
                "(e.g. one holding a bge/m3e/text2vec model) or set CITEQA_ALLOW_HUB=1 to download it"
            ) from exc
        self._query_prefix, self._passage_prefix = resolve_prefixes(
            name_or_path, settings.query_prefix, settings.passage_prefix
        )
        self._settings = settings
        self._lock = threading.Lock()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"sentence-transformers model {name_or_path!r} does not report its dimension")
        self.dim: int = int(dim)
        ident = str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path
        self.id: str = f"sentence-transformers:{ident}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            out = self._model.encode(
                texts,
                batch_size=self._settings.batch_size,
                normalize_embeddings=self._settings.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode([self._passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self._query_prefix + text])[0]

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])
