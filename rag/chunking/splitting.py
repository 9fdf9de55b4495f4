"""Sentence units of a text region, and the splitting of a sentence too long for one chunk.

Sentences are rag.text's (`split_sentences`, the splitter citations quote with), so chunk boundaries
fall where cited sentences end. A sentence longer than `max_tokens` is split again at clause marks
(，、：, line breaks, spaces), and as a last resort by characters.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

from rag.chunking.counting import TokenCounter
from rag.text.sentences import split_sentences, strip_span

# Second-level split points inside an over-long sentence.
_CLAUSE_END = re.compile(r"[，,、：:]+|\n+|\s+")


def sentence_spans(counter: TokenCounter, text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Trimmed sentence spans in text[start:end]; over-long ones split further."""
    out: list[tuple[int, int]] = []
    for s, e in split_sentences(text[start:end]):
        s, e = s + start, e + start
        if counter.fits(text, s, e):
            out.append((s, e))
        else:
            out.extend(split_long(counter, text, s, e))
    return out


def split_long(counter: TokenCounter, text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split an over-long sentence at clause marks / whitespace, else by characters.

    Each part is the longest run of pieces whose exact count fits. It is found by galloping from
    the estimate that the pieces' own counts give (each piece is counted once), not by re-counting
    a growing prefix once per piece: that made a one-line file cost (pieces x part length), ~100x
    normal text (issue 17).
    """
    max_tokens = counter.max_tokens
    cuts = [m.end() for m in _CLAUSE_END.finditer(text, start, end) if m.end() < end]
    bounds = [start, *cuts, end]  # piece i is text[bounds[i]:bounds[i + 1]]
    n_pieces = len(bounds) - 1
    sums = [0]  # sums[k]: estimated tokens of pieces [0, k); a lone trailing space would count as a token
    for k in range(n_pieces):
        sums.append(sums[-1] + counter.unit_tokens(text[bounds[k] : bounds[k + 1]].rstrip()))
    room = max_tokens - counter.overhead
    out: list[tuple[int, int]] = []
    i = 0
    while i < n_pieces:
        s = bounds[i]
        guess = bisect.bisect_right(sums, sums[i] + room) - 1
        j = largest_fitting(lambda j: counter.count(text[s : bounds[j]]) <= max_tokens, i + 1, n_pieces, guess)  # noqa: B023 - called here, in this iteration
        out.append((s, bounds[j]))
        i = j
    final: list[tuple[int, int]] = []
    for s, e in out:
        s, e = strip_span(text, s, e)
        if s >= e:
            continue
        if counter.count(text[s:e]) <= max_tokens:
            final.append((s, e))
        else:
            final.extend(split_chars(counter, text, s, e))
    return final


def split_chars(counter: TokenCounter, text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Last resort for text with no break at all: the longest prefixes that fit.

    Found by galloping from the previous part's length, so each count covers about one part; a
    binary search over the whole rest counted ever-longer texts (quadratic on a 12 MB CJK line).
    """
    max_tokens = counter.max_tokens
    out: list[tuple[int, int]] = []
    s = start
    guess = max(1, max_tokens)  # about a character per token (CJK); corrected by every part after
    while s < end:
        e = largest_fitting(lambda e: counter.count(text[s:e]) <= max_tokens, s + 1, end, s + guess)  # noqa: B023 - called here, in this iteration
        a, b = strip_span(text, s, e)
        if a < b:
            out.append((a, b))
        guess, s = e - s, e
    return out


def largest_fitting(fits: Callable[[int], bool], lo: int, hi: int, guess: int) -> int:
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
