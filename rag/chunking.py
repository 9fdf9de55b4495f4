"""Chinese-aware, heading-aware, table-aware chunking with exact page offsets.

`make_chunker(settings, count_tokens)` returns a `SentenceChunker` whose `chunk(doc, doc_id)` turns a
ParsedDocument into Chunks sized in the embedder's own tokens.

How a document is cut:
- **Units.** Each page is read block by block (Page.blocks, in order; text not covered by any block
  is read as blank-line-separated paragraphs, where a run of lines starting with '|' is a markdown
  table). Text blocks are split into sentences: Chinese ends 。！？；… , '!'/'?' and an English '.'
  followed by a space or the end (not after Mr./Dr./e.g./a single capital...), each keeping its
  closing quotes and brackets. A sentence longer than `max_tokens` is split again at clause marks
  (，、：, line breaks, spaces), and as a last resort by characters. A table block is one atomic unit.
- **Packing.** Units are packed greedily up to `max_tokens`. A heading (Block.heading_level > 0)
  always starts a new chunk and stays with the text after it (several headings in a row stay
  together); the heading stack gives `Chunk.section`, e.g. "第二节 公司简介 > 一、营业收入". A new
  paragraph that does not fit whole starts a new chunk once the current one is half full. After a
  break inside running text, the next chunk repeats trailing sentences of the previous one, up to
  `overlap_tokens`. A chunk under `min_tokens` is merged into a neighbour on the same page when
  the result fits.
- **Tables** are never split inside a row. A table that fits stays whole; a bigger one is split by
  rows and every part after the first starts with the table's header row (+ separator) again.
- **Pages and offsets.** Chunks never cross a page: `page_end == page_start` and
  `page.text[char_start:char_end] == chunk.text`. The one exception is a table part that repeats
  the header: its text is `header + "\\n" + page.text[char_start:char_end]` (offsets cover its rows).
- **Sizes.** Every chunk's `token_count` is `count_tokens(chunk.text)` (the embedder's count, which
  includes its special/prefix tokens) and is <= `max_tokens`, except a single table row (or a
  header + one row) that is larger on its own.
- **Ids** are `f"{doc_id}-{ordinal:05d}"`: the same document and settings always give the same chunks,
  so a resumed ingest ends with exactly the chunks of a clean run.

Token counts are cached per distinct text; each sentence is counted once and each finished chunk
once more exactly (sums of sentence counts can be off by a token or two at the joins).
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from rag.records import Block, Chunk, Page, ParsedDocument
from rag.settings import ChunkingSettings

CountTokens = Callable[[str], int]

_CLOSERS = re.escape("\"'”’)）]】」』》〉")
# Sentence ends: CJK marks (any context), ASCII !? and '.' when followed by space/end/CJK, ellipses.
_SENT_END = re.compile(
    rf"(?:[。！？；]+|…+|\.{{3,}}|[!?]+(?=[{_CLOSERS}]*(?:\s|$|[\u3000-\u9fff]))"
    rf"|\.(?=[{_CLOSERS}]*(?:\s|$)))[{_CLOSERS}]*"
)
# Words after which '.' does not end an English sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "fig", "approx",
    "inc", "corp", "co", "ltd", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "u.s", "u.k", "a.m", "p.m",
}  # fmt: skip
_WORD_BEFORE_DOT = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
_LIST_MARKER = re.compile(r"\s*\(?(?:\d{1,3}(?:\.\d{1,3})*|[A-Za-z]|[ivxlcIVXLC]{1,5})\)?\.")
# Second-level split points inside an over-long sentence.
_CLAUSE_END = re.compile(r"[，,、：:]+|\n+|\s+")
_PARA_SPLIT = re.compile(r"\n[ \t\u3000]*\n\s*")
_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{2,}")

_SECTION_TITLE_MAX = 80
_CACHE_TEXT_MAX = 300  # characters; bounds the token-count cache to a few MB


@dataclass(slots=True)
class _Unit:
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
class _Piece:
    """A finished chunk before ids are given: page.text[start:end], maybe after a repeated header."""

    page: int
    start: int
    end: int
    section: str
    tokens: int
    prefix: str = ""
    heading: bool = False  # starts with a heading (never merged into the piece before it)


class SentenceChunker:
    """The default chunker; see the module docstring for the rules."""

    def __init__(self, settings: ChunkingSettings, count_tokens: CountTokens, *, cache_size: int = 32_768) -> None:
        self.max_tokens = settings.max_tokens
        self.overlap_tokens = min(settings.overlap_tokens, settings.max_tokens // 2)
        self.min_tokens = min(settings.min_tokens, settings.max_tokens // 2)
        self._count_raw = count_tokens
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        # Fixed cost of any passage (special tokens, the embedder's "passage: " prefix).
        self._overhead = max(0, count_tokens("a") - 1)

    # ------------------------------------------------------------------ token counting
    def count(self, text: str) -> int:
        """The embedder's token count for `text` as one passage (cached)."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        n = int(self._count_raw(text))
        if len(text) <= _CACHE_TEXT_MAX:  # sentences and headings repeat (running text, boilerplate); chunks rarely
            self._cache[text] = n
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return n

    def _unit_tokens(self, text: str) -> int:
        return max(1, self.count(text) - self._overhead)

    # ------------------------------------------------------------------ public API
    def chunk(self, doc: ParsedDocument, doc_id: str) -> list[Chunk]:
        """Split `doc` into chunks with ids `f"{doc_id}-{ordinal:05d}"`."""
        sections: list[tuple[int, str]] = []  # heading stack: (level, title)
        out: list[Chunk] = []
        for page in doc.pages:
            units = self._page_units(page, sections)
            for piece in self._merge_small(page, self._pack(page, units)):
                text = piece.prefix + page.text[piece.start : piece.end]
                ordinal = len(out)
                out.append(
                    Chunk(
                        id=f"{doc_id}-{ordinal:05d}",
                        doc_id=doc_id,
                        text=text,
                        page_start=page.number,
                        page_end=page.number,
                        char_start=piece.start,
                        char_end=piece.end,
                        section=piece.section,
                        token_count=piece.tokens,
                        ordinal=ordinal,
                    )
                )
        return out

    # ------------------------------------------------------------------ units of one page
    def _page_units(self, page: Page, sections: list[tuple[int, str]]) -> list[_Unit]:
        text = page.text
        units: list[_Unit] = []
        para = 0
        for kind, start, end, level in _regions(page):
            para += 1
            if kind == "heading":
                title = " ".join(text[start:end].split())[:_SECTION_TITLE_MAX]
                while sections and sections[-1][0] >= level:
                    sections.pop()
                sections.append((level, title))
                path = _section_path(sections)
                units.append(_Unit(start, end, self._unit_tokens(text[start:end]), "heading", para, path))
                continue
            path = _section_path(sections)
            if kind == "table":
                units.append(_Unit(start, end, self._unit_tokens(text[start:end]), "table", para, path))
                continue
            for s, e in self._sentences(text, start, end):
                units.append(_Unit(s, e, self._unit_tokens(text[s:e]), "sent", para, path))
        return units

    def _sentences(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Trimmed sentence spans in text[start:end]; over-long ones split further."""
        spans: list[tuple[int, int]] = []
        pos = start
        for m in _SENT_END.finditer(text, start, end):
            if m.group(0).startswith(".") and _is_abbreviation(text, pos, m.start()):
                continue
            spans.append((pos, m.end()))
            pos = m.end()
        spans.append((pos, end))
        out: list[tuple[int, int]] = []
        for s, e in spans:
            s, e = _trim(text, s, e)
            if s >= e:
                continue
            if self._fits(text, s, e):
                out.append((s, e))
            else:
                out.extend(self._split_long(text, s, e))
        return out

    def _fits(self, text: str, start: int, end: int) -> bool:
        """Whether text[start:end] fits in max_tokens; a long text is judged by a prefix first (counts only
        grow), so a 12 MB sentence is not tokenized whole just to learn that it must be split."""
        probe = 8 * self.max_tokens  # characters: more than any max_tokens tokens cover in practice
        if end - start > probe and self.count(text[start : start + probe]) > self.max_tokens:
            return False
        return self.count(text[start:end]) <= self.max_tokens

    def _split_long(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Split an over-long sentence at clause marks / whitespace, else by characters.

        Each part is the longest run of pieces whose exact count fits. It is found by galloping from
        the estimate that the pieces' own counts give (each piece is counted once), not by re-counting
        a growing prefix once per piece: that made a one-line file cost (pieces x part length), ~100x
        normal text (issue 17).
        """
        cuts = [m.end() for m in _CLAUSE_END.finditer(text, start, end) if m.end() < end]
        bounds = [start, *cuts, end]  # piece i is text[bounds[i]:bounds[i + 1]]
        n_pieces = len(bounds) - 1
        sums = [0]  # sums[k]: estimated tokens of pieces [0, k); a lone trailing space would count as a token
        for k in range(n_pieces):
            sums.append(sums[-1] + self._unit_tokens(text[bounds[k] : bounds[k + 1]].rstrip()))
        room = self.max_tokens - self._overhead
        out: list[tuple[int, int]] = []
        i = 0
        while i < n_pieces:
            s = bounds[i]
            guess = bisect.bisect_right(sums, sums[i] + room) - 1
            j = _largest_fitting(lambda j: self.count(text[s : bounds[j]]) <= self.max_tokens, i + 1, n_pieces, guess)  # noqa: B023 - called here, in this iteration
            out.append((s, bounds[j]))
            i = j
        final: list[tuple[int, int]] = []
        for s, e in out:
            s, e = _trim(text, s, e)
            if s >= e:
                continue
            if self.count(text[s:e]) <= self.max_tokens:
                final.append((s, e))
            else:
                final.extend(self._split_chars(text, s, e))
        return final

    def _split_chars(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Last resort for text with no break at all: the longest prefixes that fit.

        Found by galloping from the previous part's length, so each count covers about one part; a
        binary search over the whole rest counted ever-longer texts (quadratic on a 12 MB CJK line).
        """
        out: list[tuple[int, int]] = []
        s = start
        guess = max(1, self.max_tokens)  # about a character per token (CJK); corrected by every part after
        while s < end:
            e = _largest_fitting(lambda e: self.count(text[s:e]) <= self.max_tokens, s + 1, end, s + guess)  # noqa: B023 - called here, in this iteration
            a, b = _trim(text, s, e)
            if a < b:
                out.append((a, b))
            guess, s = e - s, e
        return out

    # ------------------------------------------------------------------ packing
    def _pack(self, page: Page, units: list[_Unit]) -> list[_Piece]:
        """Greedy packing of one page's units into pieces (rules in the module docstring)."""
        text = page.text
        pieces: list[_Piece] = []
        para_tokens: dict[int, int] = {}
        for u in units:
            para_tokens[u.para] = para_tokens.get(u.para, 0) + u.tokens

        def size(us: list[_Unit]) -> int:
            return self._overhead + sum(x.tokens for x in us)

        def close(us: list[_Unit], n_overlap: int) -> tuple[list[_Unit], list[_Unit]]:
            """Emit the longest prefix of `us` whose exact count fits; return (emitted, leftover)."""
            while True:
                k = len(us)
                while True:
                    n = self.count(us[0].prefix + text[us[0].start : us[k - 1].end])
                    if n <= self.max_tokens or k - n_overlap <= 1:
                        break
                    k -= 1
                if n > self.max_tokens and n_overlap:  # the repeated overlap is what does not fit
                    us, n_overlap = us[n_overlap:], 0
                    continue
                head = us[0]
                # The section of the first real content, so a chunk opening with headings is labelled
                # with the deepest of them.
                section = next((x.section for x in us[:k] if x.kind != "heading"), us[k - 1].section)
                pieces.append(
                    _Piece(page.number, head.start, us[k - 1].end, section, n, head.prefix, head.kind == "heading")
                )
                return us[:k], us[k:]

        queue: deque[_Unit] = deque(units)
        cur: list[_Unit] = []
        overlap = 0  # leading units of `cur` repeated from the previous piece

        def requeue(*groups: list[_Unit]) -> None:
            for x in reversed([x for g in groups for x in g]):
                queue.appendleft(x)

        while queue:
            u = queue.popleft()
            fits = size(cur) + u.tokens <= self.max_tokens
            if cur and len(cur) == overlap and (u.kind != "sent" or not fits):
                cur, overlap = [], 0  # an overlap is only worth keeping in front of more running text
                fits = size(cur) + u.tokens <= self.max_tokens
            has_content = any(x.kind != "heading" for x in cur)

            if u.kind == "table" and not u.prefix and not fits:
                if has_content:  # a table too big for the room left starts its own chunk
                    body, heads = _split_trailing_headings(cur)
                    leftover = close(body, overlap)[1] if body else []
                    requeue(leftover, heads, [u])
                    cur, overlap = [], 0
                    continue
                if not u.split:  # cur is empty or only headings: split the table by rows
                    requeue(self._table_parts(text, u, room=self.max_tokens - size(cur)))
                    continue
                if cur:  # not even header + one row fits beside the headings
                    close(cur, 0)
                cur, overlap = [u], 0
                continue
            if not cur:
                cur, overlap = [u], 0
                continue
            if u.prefix or (u.kind == "heading" and has_content):
                leftover = close(cur, overlap)[1]
                if leftover:
                    requeue(leftover, [u])
                    cur, overlap = [], 0
                else:
                    cur, overlap = [u], 0
                continue
            if u.kind == "heading":
                cur.append(u)  # headings in a row stay together, with what follows them
                continue
            new_para = u.para != cur[-1].para
            para_wont_fit = size(cur) + para_tokens[u.para] > self.max_tokens
            if (
                fits
                and new_para
                and has_content
                and u.kind == "sent"
                and para_wont_fit
                and size(cur) >= self.max_tokens // 2
            ):
                leftover = close(cur, overlap)[1]  # break at the paragraph boundary, not inside it
                requeue(leftover, [u])
                cur, overlap = [], 0
                continue
            if fits:
                cur.append(u)
                continue
            # Size break.
            body, heads = _split_trailing_headings(cur)
            if not body:  # only headings, and u does not fit beside them: headings alone
                leftover = close(cur, 0)[1]
                requeue(leftover, [u])
                cur, overlap = [], 0
                continue
            emitted, leftover = close(body, overlap)
            if leftover or heads:
                requeue(leftover, heads, [u])
                cur, overlap = [], 0
                continue
            tail = [] if new_para else self._overlap_tail(emitted, u)
            cur, overlap = [*tail, u], len(tail)
        if cur and len(cur) > overlap:
            close(cur, overlap)
        return pieces

    def _overlap_tail(self, body: list[_Unit], nxt: _Unit) -> list[_Unit]:
        """Trailing sentences of `body` (same section) worth at most overlap_tokens, that fit before `nxt`."""
        if self.overlap_tokens <= 0 or nxt.kind != "sent":
            return []
        tail: list[_Unit] = []
        total = 0
        for u in reversed(body):
            if u.kind != "sent" or u.section != nxt.section or total + u.tokens > self.overlap_tokens:
                break
            tail.insert(0, u)
            total += u.tokens
        if len(tail) == len(body):  # never repeat a whole chunk
            tail = tail[1:]
            total = sum(u.tokens for u in tail)
        if tail and self._overhead + total + nxt.tokens > self.max_tokens:
            return []
        return tail

    def _table_parts(self, text: str, table: _Unit, room: int) -> list[_Unit]:
        """Split a table by rows; parts after the first carry the header rows as `prefix`."""
        rows: list[tuple[int, int]] = []
        pos = table.start
        for line in text[table.start : table.end].split("\n"):
            s, e = _trim(text, pos, pos + len(line))
            if s < e:
                rows.append((s, e))
            pos += len(line) + 1
        n_header = 2 if len(rows) >= 2 and _TABLE_SEPARATOR.match(text[rows[1][0] : rows[1][1]]) else 1
        n_header = min(n_header, len(rows))
        prefix = text[rows[0][0] : rows[n_header - 1][1]] + "\n"
        header_tokens = self._unit_tokens(prefix)
        margin = 2 + self.max_tokens // 50  # summed row counts can be a little under the exact count

        parts: list[_Unit] = []
        budget = room - margin
        cur_s, cur_e = rows[0][0], rows[n_header - 1][1]
        cur_tokens, cur_rows = header_tokens, 0
        for rs, re_ in rows[n_header:]:
            row_tokens = self._unit_tokens(text[rs:re_])
            if cur_rows and self._overhead + cur_tokens + row_tokens > budget:
                parts.append(self._table_part(text, table, cur_s, cur_e, prefix if parts else ""))
                budget = self.max_tokens - margin
                cur_s, cur_tokens, cur_rows = rs, header_tokens, 0
            cur_e = re_
            cur_tokens += row_tokens
            cur_rows += 1
        parts.append(self._table_part(text, table, cur_s, cur_e, prefix if parts else ""))
        return parts

    def _table_part(self, text: str, table: _Unit, s: int, e: int, prefix: str) -> _Unit:
        tokens = self._unit_tokens(prefix + text[s:e])
        return _Unit(s, e, tokens, "table", table.para, table.section, prefix=prefix, split=True)

    # ------------------------------------------------------------------ tiny chunks
    def _merge_small(self, page: Page, pieces: list[_Piece]) -> list[_Piece]:
        """Merge pieces under min_tokens into a neighbour on the same page when the result fits.

        Never across a heading: a piece that starts with one is not merged into the piece before it.
        """
        if self.min_tokens <= 0 or len(pieces) < 2:
            return pieces
        text = page.text
        out = list(pieces)
        i = 0
        while i < len(out):
            p = out[i]
            if p.tokens - self._overhead >= self.min_tokens or p.prefix:
                i += 1
                continue
            merged = False
            for j in (i - 1, i + 1):  # the previous piece first: a tail belongs with what it ends
                if not 0 <= j < len(out):
                    continue
                a, b = (out[j], p) if j < i else (p, out[j])
                if b.prefix or b.heading:
                    continue
                s, e = min(a.start, b.start), max(a.end, b.end)
                n = self.count(a.prefix + text[s:e])
                if n <= self.max_tokens:
                    k = min(i, j)
                    out[k] = _Piece(page.number, s, e, a.section, n, a.prefix, a.heading)
                    del out[k + 1]
                    merged = True
                    i = k
                    break
            if not merged:
                i += 1
        return out


def make_chunker(settings: ChunkingSettings, count_tokens: CountTokens) -> SentenceChunker:
    """The chunker for these settings; `count_tokens` is the embedder's (e.g. Embedder.count_tokens)."""
    return SentenceChunker(settings, count_tokens)


# ---------------------------------------------------------------------- helpers
def _largest_fitting(fits: Callable[[int], bool], lo: int, hi: int, guess: int) -> int:
    """The largest x in [lo, hi] with fits(x), for `fits` true up to some x and false after; lo if none.

    Gallops from `guess` (doubling steps up or down), then bisects: O(log distance) calls, each on a
    text about as long as the answer, instead of bisecting [lo, hi] with calls on texts up to `hi`.
    """
    guess = min(max(guess, lo), hi)
    if fits(guess):
        lo, step = guess, 1
        while lo + step <= hi:
            if not fits(lo + step):
                hi = lo + step - 1
                break
            lo += step
            step *= 2
    else:
        hi, step = guess - 1, 1
        while hi - step >= lo:
            if fits(hi - step + 1):
                lo = hi - step + 1
                break
            hi -= step
            step *= 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split_trailing_headings(us: list[_Unit]) -> tuple[list[_Unit], list[_Unit]]:
    k = len(us)
    while k > 0 and us[k - 1].kind == "heading":
        k -= 1
    return us[:k], us[k:]


def _section_path(sections: list[tuple[int, str]]) -> str:
    return " > ".join(title for _, title in sections if title)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _is_abbreviation(text: str, sent_start: int, dot: int) -> bool:
    """'.' after Mr/e.g./U.S./a single capital, or ending a list marker such as '1.' or '(iv).'."""
    if _LIST_MARKER.fullmatch(text, sent_start, dot + 1):
        return True
    m = _WORD_BEFORE_DOT.search(text, max(sent_start, dot - 12), dot + 1)
    if not m:
        return False
    word = m.group(1)
    return len(word) == 1 and word.isupper() or word.lower() in _ABBREVIATIONS


def _regions(page: Page) -> list[tuple[str, int, int, int]]:
    """(kind, start, end, heading_level) for the page in reading order; kind is text|heading|table.

    Blocks give structure; text not covered by blocks (or a page without blocks) is read as
    paragraphs, with runs of '|' lines treated as markdown tables.
    """
    text = page.text
    n = len(text)
    blocks: list[Block] = sorted(
        (b for b in page.blocks if 0 <= b.char_start < b.char_end <= n), key=lambda b: (b.char_start, b.char_end)
    )
    regions: list[tuple[str, int, int, int]] = []
    pos = 0
    for b in blocks:
        start = max(b.char_start, pos)
        if start >= b.char_end:
            continue
        if start > pos:
            regions.extend(_paragraphs(text, pos, start))
        s, e = _trim(text, start, b.char_end)
        if s < e:
            if b.kind == "table":
                regions.append(("table", s, e, 0))
            elif b.heading_level > 0:
                regions.append(("heading", s, e, b.heading_level))
            else:
                regions.extend(_paragraphs(text, s, e))
        pos = b.char_end
    if pos < n:
        regions.extend(_paragraphs(text, pos, n))
    return regions


def _paragraphs(text: str, start: int, end: int) -> list[tuple[str, int, int, int]]:
    out: list[tuple[str, int, int, int]] = []
    pos = start
    bounds = [(m.start(), m.end()) for m in _PARA_SPLIT.finditer(text, start, end)]
    for a, b in [*bounds, (end, end)]:
        out.extend(_split_tables(text, pos, a))
        pos = b
    return out


def _split_tables(text: str, start: int, end: int) -> list[tuple[str, int, int, int]]:
    """One paragraph; runs of markdown table lines inside it become table regions."""
    s, e = _trim(text, start, end)
    if s >= e:
        return []
    if "|" not in text[s:e]:
        return [("text", s, e, 0)]
    out: list[tuple[str, int, int, int]] = []
    run_kind = ""
    run_s = run_e = s
    pos = s
    for line in text[s:e].split("\n"):
        ls, le = pos, pos + len(line)
        kind = "table" if line.lstrip().startswith("|") else "text"
        if kind != run_kind and run_kind:
            a, b = _trim(text, run_s, run_e)
            if a < b:
                out.append((run_kind, a, b, 0))
            run_s = ls
        elif not run_kind:
            run_s = ls
        run_kind, run_e = kind, le
        pos = le + 1
    a, b = _trim(text, run_s, run_e)
    if a < b:
        out.append((run_kind, a, b, 0))
    return out
