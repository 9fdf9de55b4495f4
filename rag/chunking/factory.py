"""Building the chunker, and what a knowledge base's manifest records about it."""

from __future__ import annotations

from typing import Any

from rag.chunking.chunker import SentenceChunker
from rag.chunking.context import HEADER_SCHEME
from rag.chunking.units import CountTokens
from rag.settings import ChunkingSettings

# Bump whenever the same document and settings would give other chunks (boundaries, ids, texts), so a
# knowledge base built by another version is detected on open (rag.kb.check_chunker). History:
#   1 (implicit; manifests before versions were recorded): the chunker's own sentence splitter.
#   2: sentences from rag.text.split_sentences, the splitter citations quote with (issue 18).
CHUNKER_VERSION = 2


def make_chunker(settings: ChunkingSettings, count_tokens: CountTokens) -> SentenceChunker:
    """The chunker for these settings; `count_tokens` is the embedder's (e.g. Embedder.count_tokens)."""
    return SentenceChunker(settings, count_tokens)


def chunker_manifest(settings: ChunkingSettings | dict[str, Any]) -> dict[str, Any]:
    """The `chunker` entry of a manifest: the chunking settings plus CHUNKER_VERSION; `headers` is the
    header scheme (rag.chunking.context.HEADER_SCHEME) or "" for none."""
    data = settings.model_dump() if isinstance(settings, ChunkingSettings) else dict(settings)
    data["headers"] = HEADER_SCHEME if data.get("headers", True) else ""
    data["version"] = CHUNKER_VERSION
    return data
