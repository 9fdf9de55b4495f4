"""Instruction prefixes by model family, shared by the backends that add them on the client side.

e5 was trained with `query: ` / `passage: `, bge with a query instruction only; a model missing from
this table gets none unless settings.embedder.query_prefix / passage_prefix say otherwise.
"""

from __future__ import annotations

from pathlib import Path

# Matched as a substring of the model's last path component, in this order.
PREFIXES: dict[str, tuple[str, str]] = {
    "e5": ("query: ", "passage: "),
    "bge-small-zh": ("为这个句子生成表示以用于检索相关文章：", ""),
    "bge-base-zh": ("为这个句子生成表示以用于检索相关文章：", ""),
    "bge-large-zh": ("为这个句子生成表示以用于检索相关文章：", ""),
    "bge-small-en": ("Represent this sentence for searching relevant passages: ", ""),
    "bge-base-en": ("Represent this sentence for searching relevant passages: ", ""),
    "bge-large-en": ("Represent this sentence for searching relevant passages: ", ""),
}


def default_prefixes(name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) for a model name, hub id or local path."""
    lowered = Path(name).name.lower()
    for key, prefixes in PREFIXES.items():
        if key in lowered:
            return prefixes
    return ("", "")


def resolve_prefixes(name: str, query_prefix: str | None, passage_prefix: str | None) -> tuple[str, str]:
    """Settings win over the family defaults (an empty string in settings means 'no prefix')."""
    query_default, passage_default = default_prefixes(name)
    return (
        query_prefix if query_prefix is not None else query_default,
        passage_prefix if passage_prefix is not None else passage_default,
    )
