"""Running headers and footers: lines that repeat near the top or bottom of many pages.

They are removed from the page text (kept as `Page.header`), so "Annual report 2023 · 12" is never
glued into a sentence a citation quotes. Lone page numbers go too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ingest.parsers.layout import Line, merge_row
from ingest.parsers.textclean import header_key, is_page_number

BAND = 0.12  # top / bottom share of the page where running headers and footers live
HEADER_SHARE = 0.4  # a line repeated on this share of pages (of a doc with >= 3) is a running header


def band_rows(lines: Sequence[Line], page_height: float) -> list[tuple[Line, list[Line]]]:
    """Candidate running-header rows, with the lines that make them: up to 3 rows in the top and
    bottom bands of the page, and always the first and last 2 rows (HTML-to-PDF filings print their
    footer right under the content, far from the page edge)."""
    text_lines = sorted((ln for ln in lines if ln.table < 0 and ln.text and ln.axis), key=lambda item: item.yc)
    rows: list[list[Line]] = []
    bottom = 0.0  # of the last row, kept as it grows: a row of 20,000 fragments stays linear
    for ln in text_lines:
        if rows and ln.y0 < bottom - 0.5 * ln.height:
            rows[-1].append(ln)
            bottom = max(bottom, ln.y1)
        else:
            rows.append([ln])
            bottom = ln.y1
    picked: list[int] = []
    for i, row in enumerate(rows):
        top = max(r.y1 for r in row) <= page_height * BAND
        bottom = min(r.y0 for r in row) >= page_height * (1 - BAND)
        if (top and i < 3) or (bottom and i >= len(rows) - 3):
            picked.append(i)
        elif (i < 2 or i >= len(rows) - 2) and sum(len(r.text) for r in row) <= 60:
            picked.append(i)  # outside the bands only a short line can be a running header
    side = [(ln, [ln]) for ln in lines if not ln.axis and ln.text and len(ln.text) <= 80]
    return [(merge_row(list(rows[i])), rows[i]) for i in picked] + side


def header_keys(pages: Iterable[tuple[Sequence[Line], float]]) -> set[str]:
    """Keys of lines that repeat near the top or bottom of many pages (digits normalised)."""
    counts: Counter[str] = Counter()
    n = 0
    for lines, height in pages:
        n += 1
        counts.update({header_key(row.text) for row, _ in band_rows(lines, height)})
    if n < 3:
        return set()
    need = max(2, HEADER_SHARE * n)
    return {key for key, c in counts.items() if c >= need and key}


def split_header(lines: Sequence[Line], page_height: float, keys: set[str]) -> tuple[list[Line], list[str]]:
    """Remove running headers/footers and lone page numbers; return (body lines, removed texts)."""
    removed_ids: set[int] = set()
    removed: list[str] = []
    for row, parts in band_rows(lines, page_height):
        if header_key(row.text) in keys or is_page_number(row.text):
            removed_ids.update(id(p) for p in parts)
            removed.append(row.text)
    if not removed_ids:
        return list(lines), []
    return [ln for ln in lines if id(ln) not in removed_ids], removed
