"""A page in reading order as regions: text, heading or table (from its blocks, else from its text)."""

from __future__ import annotations

import re

from rag.records import Block, Page
from rag.text.sentences import strip_span

Region = tuple[str, int, int, int]  # (kind: text|heading|table, start, end, heading_level)

_PARA_SPLIT = re.compile(r"\n[ \t\u3000]*\n\s*")


def regions(page: Page) -> list[Region]:
    """(kind, start, end, heading_level) for the page in reading order.

    Blocks give structure; text not covered by blocks (or a page without blocks) is read as
    paragraphs, with runs of '|' lines treated as markdown tables.
    """
    text = page.text
    n = len(text)
    blocks: list[Block] = sorted(
        (b for b in page.blocks if 0 <= b.char_start < b.char_end <= n), key=lambda b: (b.char_start, b.char_end)
    )
    out: list[Region] = []
    pos = 0
    for b in blocks:
        start = max(b.char_start, pos)
        if start >= b.char_end:
            continue
        if start > pos:
            out.extend(_paragraphs(text, pos, start))
        s, e = strip_span(text, start, b.char_end)
        if s < e:
            if b.kind == "table":
                out.append(("table", s, e, 0))
            elif b.heading_level > 0:
                out.append(("heading", s, e, b.heading_level))
            else:
                out.extend(_paragraphs(text, s, e))
        pos = b.char_end
    if pos < n:
        out.extend(_paragraphs(text, pos, n))
    return out


def _paragraphs(text: str, start: int, end: int) -> list[Region]:
    out: list[Region] = []
    pos = start
    bounds = [(m.start(), m.end()) for m in _PARA_SPLIT.finditer(text, start, end)]
    for a, b in [*bounds, (end, end)]:
        out.extend(_split_tables(text, pos, a))
        pos = b
    return out


def _split_tables(text: str, start: int, end: int) -> list[Region]:
    """One paragraph; runs of markdown table lines inside it become table regions."""
    s, e = strip_span(text, start, end)
    if s >= e:
        return []
    if "|" not in text[s:e]:
        return [("text", s, e, 0)]
    out: list[Region] = []
    run_kind = ""
    run_s = run_e = s
    pos = s
    for line in text[s:e].split("\n"):
        ls, le = pos, pos + len(line)
        kind = "table" if line.lstrip().startswith("|") else "text"
        if kind != run_kind and run_kind:
            a, b = strip_span(text, run_s, run_e)
            if a < b:
                out.append((run_kind, a, b, 0))
            run_s = ls
        elif not run_kind:
            run_s = ls
        run_kind, run_e = kind, le
        pos = le + 1
    a, b = strip_span(text, run_s, run_e)
    if a < b:
        out.append((run_kind, a, b, 0))
    return out
