"""Packing one page's units into chunks: greedy up to max_tokens, with headings, paragraphs, overlap
and tables handled as the package docstring says; then tiny chunks merged into a neighbour."""

from __future__ import annotations

from collections import deque

from rag.chunking.counting import TokenCounter
from rag.chunking.tables import table_parts
from rag.chunking.units import Piece, Unit
from rag.records import Page


class Packer:
    def __init__(self, counter: TokenCounter, *, overlap_tokens: int, min_tokens: int) -> None:
        self.counter = counter
        self.max_tokens = counter.max_tokens
        self.overlap_tokens = overlap_tokens
        self.min_tokens = min_tokens

    def pack(self, page: Page, units: list[Unit]) -> list[Piece]:
        """Greedy packing of one page's units into pieces."""
        text = page.text
        count = self.counter.count
        overhead = self.counter.overhead
        pieces: list[Piece] = []
        para_tokens: dict[int, int] = {}
        for u in units:
            para_tokens[u.para] = para_tokens.get(u.para, 0) + u.tokens

        def size(us: list[Unit]) -> int:
            return overhead + sum(x.tokens for x in us)

        def close(us: list[Unit], n_overlap: int) -> tuple[list[Unit], list[Unit]]:
            """Emit the longest prefix of `us` whose exact count fits; return (emitted, leftover)."""
            while True:
                k = len(us)
                while True:
                    n = count(us[0].prefix + text[us[0].start : us[k - 1].end])
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
                    Piece(page.number, head.start, us[k - 1].end, section, n, head.prefix, head.kind == "heading")
                )
                return us[:k], us[k:]

        queue: deque[Unit] = deque(units)
        cur: list[Unit] = []
        overlap = 0  # leading units of `cur` repeated from the previous piece

        def requeue(*groups: list[Unit]) -> None:
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
                    requeue(table_parts(self.counter, text, u, room=self.max_tokens - size(cur)))
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

    def _overlap_tail(self, body: list[Unit], nxt: Unit) -> list[Unit]:
        """Trailing sentences of `body` (same section) worth at most overlap_tokens, that fit before `nxt`."""
        if self.overlap_tokens <= 0 or nxt.kind != "sent":
            return []
        tail: list[Unit] = []
        total = 0
        for u in reversed(body):
            if u.kind != "sent" or u.section != nxt.section or total + u.tokens > self.overlap_tokens:
                break
            tail.insert(0, u)
            total += u.tokens
        if len(tail) == len(body):  # never repeat a whole chunk
            tail = tail[1:]
            total = sum(u.tokens for u in tail)
        if tail and self.counter.overhead + total + nxt.tokens > self.max_tokens:
            return []
        return tail

    def merge_small(self, page: Page, pieces: list[Piece]) -> list[Piece]:
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
            if p.tokens - self.counter.overhead >= self.min_tokens or p.prefix:
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
                n = self.counter.count(a.prefix + text[s:e])
                if n <= self.max_tokens:
                    k = min(i, j)
                    out[k] = Piece(page.number, s, e, a.section, n, a.prefix, a.heading)
                    del out[k + 1]
                    merged = True
                    i = k
                    break
            if not merged:
                i += 1
        return out


def _split_trailing_headings(us: list[Unit]) -> tuple[list[Unit], list[Unit]]:
    k = len(us)
    while k > 0 and us[k - 1].kind == "heading":
        k -= 1
    return us[:k], us[k:]
