"""Splitting a table too big for one chunk: by rows, never inside one, the header repeated."""

from __future__ import annotations

import re

from rag.chunking.counting import TokenCounter
from rag.chunking.units import Unit
from rag.text.sentences import strip_span

_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{2,}")


def table_parts(counter: TokenCounter, text: str, table: Unit, room: int) -> list[Unit]:
    """Split a table by rows; parts after the first carry the header rows as `prefix`.

    The first part must fit in `room` (what is left beside headings before it), later ones in max_tokens.
    """
    rows: list[tuple[int, int]] = []
    pos = table.start
    for line in text[table.start : table.end].split("\n"):
        s, e = strip_span(text, pos, pos + len(line))
        if s < e:
            rows.append((s, e))
        pos += len(line) + 1
    n_header = 2 if len(rows) >= 2 and _TABLE_SEPARATOR.match(text[rows[1][0] : rows[1][1]]) else 1
    n_header = min(n_header, len(rows))
    prefix = text[rows[0][0] : rows[n_header - 1][1]] + "\n"
    header_tokens = counter.unit_tokens(prefix)
    margin = 2 + counter.max_tokens // 50  # summed row counts can be a little under the exact count

    parts: list[Unit] = []
    budget = room - margin
    cur_s, cur_e = rows[0][0], rows[n_header - 1][1]
    cur_tokens, cur_rows = header_tokens, 0
    for rs, re_ in rows[n_header:]:
        row_tokens = counter.unit_tokens(text[rs:re_])
        if cur_rows and counter.overhead + cur_tokens + row_tokens > budget:
            parts.append(_table_part(counter, text, table, cur_s, cur_e, prefix if parts else ""))
            budget = counter.max_tokens - margin
            cur_s, cur_tokens, cur_rows = rs, header_tokens, 0
        cur_e = re_
        cur_tokens += row_tokens
        cur_rows += 1
    parts.append(_table_part(counter, text, table, cur_s, cur_e, prefix if parts else ""))
    return parts


def _table_part(counter: TokenCounter, text: str, table: Unit, s: int, e: int, prefix: str) -> Unit:
    tokens = counter.unit_tokens(prefix + text[s:e])
    return Unit(s, e, tokens, "table", table.para, table.section, prefix=prefix, split=True)
