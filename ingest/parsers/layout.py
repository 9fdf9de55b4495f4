"""Page layout from positioned lines: reading order, columns, paragraphs, headings (running headers: headers.py).

Format-neutral: works on `Line`s (text + box + font size + bold) whether they came from a PDF text
layer or from OCR. Everything here is a top-level function of plain data, so it is cheap to test and
safe in worker processes.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ingest.parsers.textclean import is_page_number
from rag.lang import is_cjk_char, join_lines

HEADING_RATIO = 1.12  # font size over the body size that makes a line heading-like


@dataclass(slots=True)
class Line:
    """One visual line (or a placeholder for a table when `table` >= 0)."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    size: float
    bold: bool = False
    table: int = -1
    axis: bool = True  # False: written at an angle to the page's main text direction (a side label)
    cells: int = 1  # fragments on this row with clear gaps between them (> 1: a row of an unruled table)
    frags: tuple[tuple[float, float, str], ...] = ()  # (x0, x1, text) of the lines merged into this row

    def fragments(self) -> tuple[tuple[float, float, str], ...]:
        return self.frags or ((self.x0, self.x1, self.text),)

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass(slots=True)
class Paragraph:
    lines: list[Line]
    text: str
    heading_level: int = 0
    table: int = -1
    data: bool = False  # rows of an unruled table, one per line

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (
            min(ln.x0 for ln in self.lines),
            min(ln.y0 for ln in self.lines),
            max(ln.x1 for ln in self.lines),
            max(ln.y1 for ln in self.lines),
        )


@dataclass(slots=True)
class DocStats:
    """Facts about a run of pages that single pages cannot tell: body size, running headers, heading sizes."""

    body_size: float = 10.0
    header_keys: set[str] = field(default_factory=set)
    heading_sizes: list[float] = field(default_factory=list)  # distinct heading sizes, largest first


# --- rows and columns ---------------------------------------------------------------------------


def _join_in_row(left: str, right: str, gap: float, size: float) -> str:
    if not left:
        return right
    if not right:
        return left
    if gap < 0.3 * size and (is_cjk_char(left[-1]) or is_cjk_char(right[0])):
        return left + right
    return left + " " + right


def merge_rows(lines: Sequence[Line]) -> list[Line]:
    """Group lines that share a baseline band into one line each, top to bottom, left to right."""
    rows: list[list[Line]] = []
    tables: list[Line] = []
    top = bottom = 0.0  # of the last row, kept as it grows: a row of 20,000 fragments stays linear
    for ln in sorted(lines, key=lambda item: (item.yc, item.x0)):
        if ln.table >= 0:
            tables.append(ln)
            continue
        if rows:
            overlap = min(bottom, ln.y1) - max(top, ln.y0)
            if overlap >= 0.5 * min(ln.height, bottom - top):
                rows[-1].append(ln)
                top, bottom = min(top, ln.y0), max(bottom, ln.y1)
                continue
        rows.append([ln])
        top, bottom = ln.y0, ln.y1
    merged = [merge_row(row) for row in rows]
    if tables:
        merged.extend(tables)
        merged.sort(key=lambda item: item.y0 if item.table >= 0 else item.yc)
    return merged


def merge_row(row: list[Line]) -> Line:
    if len(row) == 1:
        return row[0]
    row.sort(key=lambda item: item.x0)
    # Fake bold: the same text printed twice a fraction of a point apart is one line.
    row = [ln for i, ln in enumerate(row) if i == 0 or ln.text != row[i - 1].text or ln.x0 - row[i - 1].x0 > 2]
    if len(row) == 1:
        return row[0]
    text = row[0].text
    cells = row[0].cells
    for prev, cur in zip(row, row[1:]):
        size = max(cur.size, prev.size)
        text = _join_in_row(text, cur.text, cur.x0 - prev.x1, size)
        cells += cur.cells if cur.x0 - prev.x1 >= size else cur.cells - 1
    main = max(row, key=lambda item: len(item.text))
    bold_chars = sum(len(r.text) for r in row if r.bold)
    return Line(
        min(r.x0 for r in row),
        min(r.y0 for r in row),
        max(r.x1 for r in row),
        max(r.y1 for r in row),
        text,
        main.size,
        bold_chars * 2 > sum(len(r.text) for r in row),
        cells=cells,
        frags=tuple(f for r in row for f in r.fragments()),
    )


def _tokens(text: str) -> int:
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return len(text.split()) + han // 2


def find_gutter(lines: Sequence[Line], depth: int = 0) -> float | None:
    """The x of a vertical gap that splits the lines into text columns, or None.

    Both sides must hold a real share of the text, few lines may cross the gap, and each side must
    read like prose (several words a line) whose lines fill their column, or itself split into
    columns. A column of numbers beside labels is a table, not a column.
    """
    text_lines = [ln for ln in lines if ln.table < 0 and ln.text]
    if len(text_lines) < 6:
        return None
    total = sum(len(ln.text) for ln in text_lines)
    x_min = min(ln.x0 for ln in text_lines)
    x_max = max(ln.x1 for ln in text_lines)
    width = x_max - x_min
    if width < 100 or total == 0:
        return None
    steps = 60
    x0s = np.fromiter((ln.x0 for ln in text_lines), dtype=np.float64, count=len(text_lines))
    x1s = np.fromiter((ln.x1 for ln in text_lines), dtype=np.float64, count=len(text_lines))
    weights = np.fromiter((len(ln.text) for ln in text_lines), dtype=np.float64, count=len(text_lines))
    xs = x_min + width * (0.2 + 0.6 * np.arange(steps + 1) / steps)
    crossing = ((x0s[None, :] < xs[:, None] - 1) & (x1s[None, :] > xs[:, None] + 1)) @ weights
    best_cross = float(crossing.min())
    if best_cross > 0.12 * total:  # lines across the gap are read as full-width lines
        return None
    best = [float(x) for x, c in zip(xs, crossing) if c == best_cross]
    # The run of equally good positions nearest the middle; its centre is the centre of the gap.
    runs: list[list[float]] = [[best[0]]]
    step = width * 0.6 / steps
    for x in best[1:]:
        if x - runs[-1][-1] <= step * 1.5:
            runs[-1].append(x)
        else:
            runs.append([x])
    middle = x_min + width / 2
    run = min(runs, key=lambda r: (-len(r), abs((r[0] + r[-1]) / 2 - middle)))
    gutter = (run[0] + run[-1]) / 2
    left = [ln for ln in text_lines if ln.x1 <= gutter + 1]
    right = [ln for ln in text_lines if ln.x0 >= gutter - 1]
    for side in (left, right):
        if len(side) < 3 or sum(len(ln.text) for ln in side) < 0.15 * total:
            return None
        if statistics.median(_tokens(ln.text) for ln in side) < 3:
            return None
        extent = max(ln.x1 for ln in side) - min(ln.x0 for ln in side)
        fills = statistics.median(ln.x1 - ln.x0 for ln in side) >= 0.5 * extent
        if not fills and (depth >= 1 or find_gutter(side, depth + 1) is None):
            return None
    return gutter


def _emit_columns(columns: list[Line], gutter: float, depth: int, out: list[Line]) -> None:
    if columns:
        out.extend(reading_order([ln for ln in columns if (ln.x0 + ln.x1) / 2 < gutter], depth + 1))
        out.extend(reading_order([ln for ln in columns if (ln.x0 + ln.x1) / 2 >= gutter], depth + 1))
        columns.clear()


def reading_order(lines: Sequence[Line], depth: int = 0) -> list[Line]:
    """Lines in reading order: full-width lines top to bottom; between them, column runs left
    column then right (columns found again inside each side, so three or four columns work)."""
    if depth >= 3 or len(lines) < 6:
        return merge_rows(lines)
    text_lines = [ln for ln in lines if ln.table < 0]
    if not text_lines:
        return merge_rows(lines)
    x_min = min(ln.x0 for ln in text_lines)
    width = max(ln.x1 for ln in text_lines) - x_min
    out: list[Line] = []
    segment: list[Line] = []
    wide_run: list[Line] = []

    def flush_segment() -> None:
        if not segment:
            return
        gutter = find_gutter(segment)
        if gutter is None:
            out.extend(merge_rows(segment))
            segment.clear()
            return
        columns: list[Line] = []
        for ln in segment:  # already in top-to-bottom order
            if ln.x0 < gutter - 1 and ln.x1 > gutter + 1:  # crosses the gap: read it between column runs
                _emit_columns(columns, gutter, depth, out)
                out.append(ln)
            else:
                columns.append(ln)
        _emit_columns(columns, gutter, depth, out)
        segment.clear()

    # Full-width lines (and tables) separate column runs; so does anything on the same row as one
    # (a bullet beside its line).
    wide = [ln for ln in lines if ln.x1 - ln.x0 >= 0.6 * width]
    wide_ids = {id(ln) for ln in wide}
    for ln in lines:
        if id(ln) not in wide_ids and any(w.y0 <= ln.yc <= w.y1 for w in wide if w.table < 0):
            wide_ids.add(id(ln))
    for ln in sorted(lines, key=lambda item: item.y0 if item.table >= 0 else item.yc):
        if id(ln) in wide_ids:
            flush_segment()
            wide_run.append(ln)
        else:
            if wide_run:
                out.extend(merge_rows(wide_run))
                wide_run.clear()
            segment.append(ln)
    flush_segment()
    if wide_run:
        out.extend(merge_rows(wide_run))
    return out


# --- paragraphs and headings ---------------------------------------------------------------------


def is_heading_style(line: Line, body_size: float) -> bool:
    return line.size >= body_size * HEADING_RATIO or (line.bold and line.size >= body_size * 0.9)


def typical_leading(rows: Sequence[Line]) -> float:
    """The usual gap between consecutive lines of a paragraph on this page."""
    gaps = [
        b.y0 - a.y1
        for a, b in zip(rows, rows[1:])
        if a.table < 0 and b.table < 0 and abs(a.size - b.size) < 0.5 and -2 <= b.y0 - a.y1 <= 1.5 * a.size
    ]
    return statistics.median(gaps) if gaps else 0.25 * (rows[0].size if rows else 10.0)


_LIST_MARKER_RE = re.compile(r"^(?:[•▪◦●■\-–*]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)]|\([ivx]{1,4}\))\s")


_BULLET_RE = re.compile(r"^(?:[•▪◦●■‣–\-*]|\(\w{1,3}\))\s")


def _continues(prev: Line, cur: Line, body_size: float, leading: float, first: Line | None = None) -> bool:
    if prev.table >= 0 or cur.table >= 0:
        return False
    if is_heading_style(prev, body_size) != is_heading_style(cur, body_size) or abs(prev.size - cur.size) > 1.0:
        return False
    size = max(prev.size, cur.size)
    gap = cur.y0 - prev.y1
    if gap < -0.5 * cur.height:
        return False
    if is_heading_style(prev, body_size) and abs(prev.size - cur.size) <= 0.5:
        # A heading wrapped over lines: ragged or centred lines with their own spacing.
        left_aligned = abs(cur.x0 - prev.x0) <= 2 * size
        centred = abs((cur.x0 + cur.x1) - (prev.x0 + prev.x1)) <= 4 * size
        return gap <= 0.8 * size and (left_aligned or centred)
    if gap > leading + 0.45 * size:
        return False
    hanging = first is not None and bool(_LIST_MARKER_RE.match(first.text)) and cur.x0 <= first.x0 + 4 * size
    if cur.x0 > prev.x0 + 1.2 * size and not hanging:  # the first line of a new, indented paragraph
        return False
    if cur.x0 < prev.x0 - 3 * size:  # jumped back left: another region
        return False
    if " … " in prev.text or _BULLET_RE.match(cur.text):  # a table-of-contents entry; a new list item
        return False
    if prev.text.endswith("-") and cur.text[:1].islower():  # a hyphenated word continues
        return True
    return not (prev.x1 < cur.x1 - 3 * size)  # the previous line stopped short: its paragraph ended


_NUMBER_TAIL_RE = re.compile(r"(?:(?:^|\s+)[$€£¥(]*\s?-?\d[\d,.]*\)?%?|\s+[-–—]){2,}\s*$")


def is_data_row(line: Line) -> bool:
    """A row of an unruled table: several cells with gaps between them, or a label with numbers."""
    return line.cells >= 3 or bool(_NUMBER_TAIL_RE.search(line.text))


def build_paragraphs(rows: Sequence[Line], body_size: float) -> list[Paragraph]:
    """Group ordered rows into paragraphs; lines are joined CJK-aware with de-hyphenation.

    Consecutive rows of an unruled table (no grid to find it by) stay one row per line ("\n"),
    in one paragraph, instead of running together like prose.
    """
    leading = typical_leading(rows)
    out: list[Paragraph] = []
    current: list[Line] = []
    data = False  # is `current` a run of table rows?

    def flush() -> None:
        if current:
            if data:
                text = "\n".join(ln.text for ln in current)
            else:
                text = ""
                for ln in current:
                    text = join_lines(text, ln.text)
            out.append(Paragraph(list(current), text, data=data))
            current.clear()

    for row in rows:
        if row.table >= 0:
            flush()
            out.append(Paragraph([row], "", table=row.table))
            continue
        if not row.text:
            continue
        row_is_data = is_data_row(row)
        if current:
            if data and row_is_data:
                gap = row.y0 - current[-1].y1
                if gap > leading + 1.5 * row.size or gap < -0.5 * row.height:
                    flush()
            elif data or row_is_data or not _continues(current[-1], row, body_size, leading, current[0]):
                flush()
        if not current:
            data = row_is_data
        current.append(row)
    flush()
    return out


def heading_candidate(par: Paragraph, body_size: float) -> bool:
    if par.table >= 0 or len(par.lines) > 3 or len(par.text) > 200 or is_page_number(par.text):
        return False
    if not any(ch.isalpha() for ch in par.text):
        return False
    return all(is_heading_style(ln, body_size) for ln in par.lines)


def heading_level(par: Paragraph, stats: DocStats) -> int:
    size = round(max(ln.size for ln in par.lines) * 2) / 2
    for i, s in enumerate(stats.heading_sizes):
        if size >= s:
            return min(i + 1, 3)
    return min(len(stats.heading_sizes) + 1, 3)


def heading_sizes(paragraph_sets: Iterable[Sequence[Paragraph]], body_size: float) -> list[float]:
    """Distinct (rounded) sizes of headings larger than the body, largest first."""
    sizes: set[float] = set()
    for paras in paragraph_sets:
        for par in paras:
            if heading_candidate(par, body_size):
                size = round(max(ln.size for ln in par.lines) * 2) / 2
                if size >= body_size * HEADING_RATIO:
                    sizes.add(size)
    return sorted(sizes, reverse=True)


def body_size(size_chars: Counter[float]) -> float:
    """The char-weighted median font size: the size most running text is set in."""
    total = sum(size_chars.values())
    if not total:
        return 10.0
    seen = 0
    for size in sorted(size_chars):
        seen += size_chars[size]
        if seen * 2 >= total:
            return size
    return 10.0
