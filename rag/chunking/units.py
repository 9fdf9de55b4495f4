"""What chunking works on: units (pieces of a page never cut further) and pieces (finished chunks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CountTokens = Callable[[str], int]


@dataclass(slots=True)
class Unit:
    """A piece of one page that is never cut further by packing."""

    start: int  # offsets into page.text, whitespace-trimmed
    end: int
    tokens: int  # without the embedder's fixed per-passage overhead
    kind: str  # "sent" | "heading" | "table"
    para: int  # paragraph number on the page; a change marks a paragraph boundary
    section: str  # the section path in effect (for a heading: including itself)
    prefix: str = ""  # a repeated table header this unit's chunk text starts with
    split: bool = False  # a part of a table already split by rows (not split again)


@dataclass(slots=True)
class Piece:
    """A finished chunk before ids are given: page.text[start:end], maybe after a repeated header."""

    page: int
    start: int
    end: int
    section: str
    tokens: int
    prefix: str = ""
    heading: bool = False  # starts with a heading (never merged into the piece before it)
