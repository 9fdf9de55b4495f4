"""Tables from a page's ruling: connected grids of crossing lines become rows of cell text, then markdown.

PyMuPDF's `page.find_tables()` costs 30-150 ms a page even without its layout model (and its own
text extraction can split "6,840" into "6840" and ","), so tables are found here from the vector
graphics directly: lines, thin rectangles and the borders of shaded cells are merged into
horizontal and vertical rules; rules that cross form grids; a word belongs to the grid cell holding
its centre. A few milliseconds a page, and the page's words are only read where a grid exists.
On the bench filings this finds the same tables as `find_tables` (and keeps columns it drops).

Tables without ruling (most financial statements) are found from text alignment instead:
`unruled_table` takes consecutive rows whose fragments line up in columns of numbers.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.parsers.textclean import clean_line

MAX_DRAWINGS = 5000  # a page with more vector paths is a chart or a map: skip table finding
_MIN_EDGE = 8.0
_JOIN_GAP = 8.0
_WORD_GAP = 0.6  # a gap under this share of the text height is a space between words, not cells


@dataclass(slots=True)
class FoundTable:
    bbox: tuple[float, float, float, float]
    rows: list[list[str]]


def _edges(
    drawings: Sequence[dict[str, Any]],
) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
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


def _merge_segments(
    segments: list[tuple[float, float, float]], gap: float = 2.0, tol: float = 2.0
) -> list[tuple[float, float, float]]:
    """Join collinear segments (same position within `tol`) that touch or overlap."""
    out: list[tuple[float, float, float]] = []
    group: list[tuple[float, float, float]] = []

    def flush() -> None:
        if not group:
            return
        pos = sum(g[0] for g in group) / len(group)
        spans = sorted((g[1], g[2]) for g in group)
        a0, a1 = spans[0]
        for b0, b1 in spans[1:]:
            if b0 <= a1 + gap:
                a1 = max(a1, b1)
            else:
                out.append((pos, a0, a1))
                a0, a1 = b0, b1
        out.append((pos, a0, a1))
        group.clear()

    for seg in sorted(segments):
        if group and seg[0] - group[-1][0] > tol:
            flush()
        group.append(seg)
    flush()
    return out


def _cluster(values: list[float], tol: float = 2.0) -> list[float]:
    out: list[float] = []
    for v in sorted(values):
        if out and v - out[-1] <= tol:
            continue
        out.append(v)
    return out


_NUMERIC_RE = re.compile(r"^[$€£¥(]*[-–—+]?[\d.,]*\d[\d.,]*[)%]*$|^[-–—]$")


def _join_side_by_side(grids: list[tuple[list[float], list[float]]]) -> list[tuple[list[float], list[float]]]:
    """Merge grids that sit side by side on the same row lines (a table whose middle column is unshaded)."""
    grids = sorted(grids, key=lambda g: g[1][0])
    out: list[tuple[list[float], list[float]]] = []
    for ys, xs in grids:
        for k, (oys, oxs) in enumerate(out):
            gap = xs[0] - oxs[-1]
            shared = sum(1 for y in ys if any(abs(y - o) <= 2 for o in oys))
            if -2 <= gap <= 120 and shared >= 0.5 * min(len(ys), len(oys)) and shared >= 2:
                out[k] = (_cluster(oys + ys), _cluster(oxs + xs))
                break
        else:
            out.append((ys, xs))
    return out


def _extend_right(ys: list[float], xs: list[float], words: Sequence[tuple[Any, ...]]) -> list[float]:
    """Add columns for numbers printed on the grid's rows just right of its ruling (an unshaded last column)."""
    right = xs[-1]
    extra = sorted(
        (w for w in words if w[0] >= right - 1 and w[0] <= right + 150 and ys[0] <= (w[1] + w[3]) / 2 < ys[-1]),
        key=lambda w: w[0],
    )
    if not extra or not all(_NUMERIC_RE.match(str(w[4])) for w in extra):
        return xs
    bounds: list[float] = []
    end = right
    for w in extra:
        if w[0] > end + 5:
            bounds.append(w[0] - 1)
        end = max(end, w[2])
    return _cluster([*xs, *bounds, end + 1])


def grid_tables(
    drawings: Sequence[dict[str, Any]], get_words: Callable[[], Sequence[tuple[Any, ...]]]
) -> list[FoundTable]:
    """Tables from ruling alone: connected grids of crossing lines, cells filled with the page's words.

    A few milliseconds a page where PyMuPDF's finder takes 30-150: rows are the bands between the
    grid's horizontal lines, columns the bands between its vertical lines; a word belongs to the
    cell holding its centre. Grids that hold prose rather than data are refused.
    """
    if not drawings or len(drawings) > MAX_DRAWINGS:
        return []
    import numpy as np

    horizontal, vertical = _edges(drawings)
    # Filings shade each cell separately with a few points of white between cells: bridge such gaps.
    h_list = _merge_segments(horizontal, _JOIN_GAP)
    v_list = _merge_segments(vertical, _JOIN_GAP)
    if len(h_list) < 2 or len(v_list) < 2:
        return []
    h = np.asarray(h_list[:4000], dtype=np.float32)
    v = np.asarray(v_list[:4000], dtype=np.float32)
    tol = 2.0
    cross = (
        (v[:, None, 0] >= h[None, :, 1] - tol)
        & (v[:, None, 0] <= h[None, :, 2] + tol)
        & (h[None, :, 0] >= v[:, None, 1] - tol)
        & (h[None, :, 0] <= v[:, None, 2] + tol)
    )
    n_h = len(h)
    parent = list(range(n_h + len(v)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    vi, hi = np.nonzero(cross)
    for a, b in zip(hi.tolist(), vi.tolist()):
        ra, rb = find(a), find(n_h + b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for i in range(n_h):
        groups.setdefault(find(i), ([], []))[0].append(i)
    for j in range(len(v)):
        groups.setdefault(find(n_h + j), ([], []))[1].append(j)
    grids = []
    for hs, vs in groups.values():
        if len(hs) < 2 or len(vs) < 2:
            continue
        ys = _cluster([float(h[i, 0]) for i in hs])
        x0 = min(float(h[i, 1]) for i in hs)
        x1 = max(float(h[i, 2]) for i in hs)
        xs = _cluster([x0, *(float(v[j, 0]) for j in vs), x1])
        grids.append((ys, xs))
    # A single box is a frame around text, not a table.
    grids = [g for g in _join_side_by_side(grids) if len(g[0]) >= 3 or len(g[1]) >= 3]
    if not grids:
        return []
    words = get_words()  # (x0, y0, x1, y1, word, block, line, word_no) in page coordinates
    out: list[FoundTable] = []
    for ys, xs in grids:
        xs = _extend_right(ys, xs, words)
        x0, x1 = xs[0], xs[-1]
        bbox = (x0, ys[0], x1, ys[-1])
        cells: list[list[list[str]]] = [[[] for _ in range(len(xs) - 1)] for _ in range(len(ys) - 1)]
        used = 0
        for phrase in _phrases(w for w in words if bbox[0] <= (w[0] + w[2]) / 2 < bbox[2]):
            xc = (phrase[0][0] + phrase[-1][2]) / 2
            yc = (phrase[0][1] + phrase[0][3]) / 2
            if not (bbox[1] <= yc < bbox[3]):
                continue
            r = bisect.bisect_right(ys, yc) - 1
            c = bisect.bisect_right(xs, xc) - 1
            if 0 <= r < len(cells) and 0 <= c < len(cells[r]):
                cells[r][c] += [w[4] for w in phrase]
                used += len(phrase)
        filled = sum(1 for row in cells for cell in row if cell)
        if filled < 4 or used > 40 * filled or _cuts_prose(xs, bbox, words):  # prose in a box, not data
            continue
        rows = _prune([[clean_line(" ".join(cell)) for cell in row] for row in cells])
        if len(rows) >= 2 and len(rows[0]) >= 2:
            out.append(FoundTable(bbox, rows))
    out.sort(key=lambda t: (t.bbox[1], t.bbox[0]))
    return out


def _phrases(words: Iterable[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """Words of one text line split where the gap is wider than a word space, in reading order.

    A phrase goes to one cell as a whole: the centred "of Shares that May Yet Be" of a header
    cell must not lose its first word to the column on its left.
    """
    lines: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for w in words:
        lines.setdefault((w[5], w[6]), []).append(w)
    out: list[list[tuple[Any, ...]]] = []
    for line in lines.values():
        line.sort(key=lambda w: w[0])
        out.append([line[0]])
        for a, b in zip(line, line[1:]):
            if b[0] - a[2] < _WORD_GAP * (a[3] - a[1]):
                out[-1].append(b)
            else:
                out.append([b])
    return out


PROSE_WORDS = 6  # a text line of this many words is running text, not a table row


def _cuts_prose(xs: list[float], bbox: tuple[float, float, float, float], words: Sequence[tuple[Any, ...]]) -> bool:
    """Whether the grid's columns cut through running text: two or more long text lines with
    neighbouring words, an ordinary word space apart, in different columns (a box drawn around
    a paragraph that lines up with a table's ruling is not a table)."""
    lines: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for w in words:
        xc, yc = (w[0] + w[2]) / 2, (w[1] + w[3]) / 2
        if bbox[0] <= xc < bbox[2] and bbox[1] <= yc < bbox[3]:
            lines.setdefault((w[5], w[6]), []).append(w)
    cut = 0
    for line in lines.values():
        if len(line) < PROSE_WORDS:
            continue
        line.sort(key=lambda w: w[0])
        for a, b in zip(line, line[1:]):
            col_a = bisect.bisect_right(xs, (a[0] + a[2]) / 2)
            col_b = bisect.bisect_right(xs, (b[0] + b[2]) / 2)
            if col_a != col_b and b[0] - a[2] < _WORD_GAP * (a[3] - a[1]):
                cut += 1
                break
    return cut >= 2


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


def unruled_table(rows: Sequence[Sequence[tuple[float, float, str]]]) -> list[list[str]] | None:
    """Rows of (x0, x1, text) fragments -> a grid, when they line up in columns of numbers.

    Columns are the gaps that no fragment of any row covers (whitespace projection). At least 3 rows
    and 2 columns, and most cells right of the first column numeric; otherwise None (keep it as text).
    """
    if len(rows) < 3:
        return None
    spans: list[list[float]] = []
    for a, b in sorted((f[0], f[1]) for row in rows for f in row):
        if spans and a <= spans[-1][1] + 2:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    if len(spans) < 2:
        return None
    bounds = [(spans[i][1] + spans[i + 1][0]) / 2 for i in range(len(spans) - 1)]
    grid = []
    for row in rows:
        cells: list[list[str]] = [[] for _ in spans]
        for x0, x1, text in sorted(row):
            cells[bisect.bisect_right(bounds, (x0 + x1) / 2)].append(text)
        grid.append([clean_line(" ".join(c)) for c in cells])
    grid = _prune(grid)
    if len(grid) < 3 or len(grid[0]) < 2:
        return None
    values = [c for r in grid for c in r[1:] if c]
    if not values or sum(1 for c in values if _NUMERIC_RE.match(c.replace(" ", ""))) < 0.6 * len(values):
        return None
    return grid
