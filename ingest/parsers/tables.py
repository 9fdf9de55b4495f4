"""Tables: a cheap "could this page have a ruled table" test, PyMuPDF's finder, and markdown rendering.

`page.find_tables()` costs 30-150 ms a page even without its layout model, so it only runs where
the page's vector graphics contain ruling (lines, cell borders or cell shading) that crosses into a
grid, and only inside the box around that grid. Cell text is filled from the page's own words (the finder's own text extraction can split
numbers such as "6,840").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.parsers.textclean import clean_line

MAX_DRAWINGS = 5000  # a page with more vector paths is a chart or a map: skip table finding
_MIN_EDGE = 8.0


@dataclass(slots=True)
class FoundTable:
    bbox: tuple[float, float, float, float]
    rows: list[list[str]]


def _edges(drawings: Sequence[dict[str, Any]]) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
    """Horizontal (y, x0, x1) and vertical (x, y0, y1) ruling from lines, thin rects and rect borders."""
    horizontal: list[tuple[float, float, float]] = []
    vertical: list[tuple[float, float, float]] = []
    for path in drawings:
        for item in path.get("items", ()):
            kind = item[0]
            if kind == "l":
                (x0, y0), (x1, y1) = item[1], item[2]
                if abs(y1 - y0) < 1 and abs(x1 - x0) >= _MIN_EDGE:
                    horizontal.append((y0, min(x0, x1), max(x0, x1)))
                elif abs(x1 - x0) < 1 and abs(y1 - y0) >= _MIN_EDGE:
                    vertical.append((x0, min(y0, y1), max(y0, y1)))
            elif kind in ("re", "qu"):
                rect = item[1]
                if kind == "qu":
                    xs = [pt[0] for pt in rect]
                    ys = [pt[1] for pt in rect]
                    rect = (min(xs), min(ys), max(xs), max(ys))
                x0, y0, x1, y1 = rect
                w, h = x1 - x0, y1 - y0
                if h < 3 and w >= _MIN_EDGE:
                    horizontal.append(((y0 + y1) / 2, x0, x1))
                elif w < 3 and h >= _MIN_EDGE:
                    vertical.append(((x0 + x1) / 2, y0, y1))
                elif w >= _MIN_EDGE and h >= 3:
                    horizontal += [(y0, x0, x1), (y1, x0, x1)]
                    vertical += [(x0, y0, y1), (x1, y0, y1)]
    return horizontal, vertical


def table_region(drawings: Sequence[dict[str, Any]]) -> tuple[float, float, float, float] | None:
    """The box around ruling that forms a grid (>= 6 crossings, more than a frame), or None.

    Cheap enough for every page; `find_tables` then only runs there, clipped to this box.
    """
    if not drawings or len(drawings) > MAX_DRAWINGS:
        return None
    horizontal, vertical = _edges(drawings)
    if len(horizontal) < 2 or len(vertical) < 2:
        return None
    import numpy as np

    h = np.asarray(horizontal[:4000], dtype=np.float32)
    v = np.asarray(vertical[:4000], dtype=np.float32)
    tol = 2.0
    cross = (
        (v[:, None, 0] >= h[None, :, 1] - tol)
        & (v[:, None, 0] <= h[None, :, 2] + tol)
        & (h[None, :, 0] >= v[:, None, 1] - tol)
        & (h[None, :, 0] <= v[:, None, 2] + tol)
    )
    if int(cross.sum()) < 6:
        return None
    hs = h[cross.any(axis=0)]
    vs = v[cross.any(axis=1)]
    x0 = float(min(hs[:, 1].min(), vs[:, 0].min())) - 2
    x1 = float(max(hs[:, 2].max(), vs[:, 0].max())) + 2
    y0 = float(min(hs[:, 0].min(), vs[:, 1].min())) - 2
    y1 = float(max(hs[:, 0].max(), vs[:, 2].max())) + 2
    return (x0, y0, x1, y1)


def find_tables(page: Any, clip: tuple[float, float, float, float] | None = None) -> list[FoundTable]:
    """Ruled tables on a PyMuPDF page, as rows of cell strings (at least 2 x 2 after cleaning)."""
    found = page.find_tables(clip=clip, use_layout=False)
    if not found.tables:
        return []
    words = page.get_text("words", flags=0, clip=clip)
    out: list[FoundTable] = []
    for table in found.tables:
        rows = _fill_cells([row.cells for row in table.rows], words)
        rows = _prune(rows)
        if len(rows) >= 2 and max(len(r) for r in rows) >= 2:
            out.append(FoundTable(tuple(table.bbox), rows))  # type: ignore[arg-type]
    return out


def _fill_cells(grid: list[list[Any]], words: Sequence[tuple[Any, ...]]) -> list[list[str]]:
    rows = [[[] for _ in r] for r in grid]  # type: list[list[list[str]]]
    row_tops = []
    for r in grid:
        cells = [c for c in r if c is not None]
        row_tops.append(min(c[1] for c in cells) if cells else float("inf"))
    order = sorted(range(len(grid)), key=lambda i: row_tops[i])
    tops = [row_tops[i] for i in order]
    for w in words:
        xc, yc = (w[0] + w[2]) / 2, (w[1] + w[3]) / 2
        k = bisect.bisect_right(tops, yc) - 1
        # A merged cell can make a row taller than the next row's top: look at a few rows back.
        for j in range(k, max(k - 3, -1), -1):
            ri = order[j]
            hit = False
            for ci, cell in enumerate(grid[ri]):
                if cell is not None and cell[0] <= xc < cell[2] and cell[1] <= yc < cell[3]:
                    rows[ri][ci].append(w[4])
                    hit = True
                    break
            if hit:
                break
    return [[clean_line(" ".join(parts)) for parts in r] for r in rows]


_PREFIX_UNITS = {"$", "€", "£", "¥", "US$", "HK$", "RMB", "(", "$(", "€("}
_SUFFIX_UNITS = {"%", ")", ")%", "%)", "pts"}


def _prune(rows: list[list[str]]) -> list[list[str]]:
    """Tidy a grid: currency signs joined to their numbers, empty rows and columns dropped, and
    neighbouring columns that never both hold text (a value printed beside a "$" cell) merged."""
    rows = [r for r in rows if any(r)]
    if not rows:
        return []
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    for r in rows:
        for c in range(width - 1):
            if r[c] in _PREFIX_UNITS and r[c + 1]:
                r[c], r[c + 1] = "", r[c] + r[c + 1] if r[c].endswith("(") else r[c] + " " + r[c + 1]
        for c in range(1, width):
            if r[c] in _SUFFIX_UNITS and r[c - 1]:
                r[c - 1], r[c] = r[c - 1] + r[c], ""
    keep = [c for c in range(width) if any(r[c] for r in rows)]
    rows = [[r[c] for c in keep] for r in rows]
    c = 1
    while c < len(rows[0]):
        if not any(r[c - 1] and r[c] for r in rows):
            for r in rows:
                r[c - 1] = r[c - 1] or r[c]
                del r[c]
        else:
            c += 1
    return rows


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|").strip()


def rows_to_markdown(rows: Sequence[Sequence[str]]) -> tuple[str, str]:
    """Render rows (the first is the header) as a markdown table; return (markdown, header + separator)."""
    width = max(len(r) for r in rows)
    lines = []
    for r in rows:
        cells = [_cell(c) for c in r] + [""] * (width - len(r))
        lines.append("| " + " | ".join(cells) + " |")
    separator = "|" + "|".join(["---"] * width) + "|"
    header = lines[0] + "\n" + separator
    return "\n".join([lines[0], separator, *lines[1:]]), header
