"""Evidence windows: the sentences of the retrieved chunks that bear on the question.

On a CPU every prompt token is waited for before the first answer token (10-16 ms each for the
default 1.5B model on 2 cores), so the answer prompt carries sentence windows of the hits instead of
whole chunks, within a token budget. Sentences are scored by the question's content grams (the ones
citation checking uses) weighted by how rare they are among the retrieved sentences; each hit
contributes its best sentence first, then the sentences around it, then its next best, in rank
order (the top hit twice as fast) until the budget is spent. A table row brings its header row. Citations are still verified
against the whole chunk and its page, so a shorter prompt never weakens the check.

The same scoring picks the one sentence per hit that is shown as soon as retrieval is done, before
the model has written anything (`best_sentences`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag.lang import cjk_ratio
from rag.records import Hit
from rag.text.features import features, question_features
from rag.text.sentences import is_table_row, split_sentences

CountTokens = Callable[[str], int]
MAX_SENTENCE_SHARE = 0.45  # one sentence may take at most this share of the source budget
MAX_CJK_CHARS = 80  # longer sentences are offered in pieces (~60 tokens for Qwen)
MAX_LATIN_CHARS = 400
TOP_STEPS = 2  # the top hit takes this many steps for each one the others take (it holds the answer most often)


@dataclass(slots=True)
class _Sentence:
    start: int
    end: int
    score: float
    header: int | None  # index of the table header row this row belongs to


@dataclass(slots=True)
class Window:
    """The sentences of one hit chosen for the prompt (indices into `sentences`)."""

    hit: Hit
    sentences: list[_Sentence]
    chosen: set[int] = field(default_factory=set)


def _pieces(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """A span cut at soft boundaries (commas, spaces) into pieces a prompt can take one at a time:
    an unpunctuated page or a run-on table line would otherwise be all or nothing."""
    limit = MAX_CJK_CHARS if cjk_ratio(text[a:b]) > 0.3 else MAX_LATIN_CHARS
    out: list[tuple[int, int]] = []
    while b - a > limit:
        cut = max(text.rfind(ch, a + limit // 2, a + limit) for ch in "，,；;：: 、")
        cut = cut + 1 if cut > a else a + limit
        out.append((a, cut))
        a = cut
        while a < b and text[a].isspace():
            a += 1
    if b > a:
        out.append((a, b))
    return out


def _sentences(hit: Hit) -> list[tuple[int, int]]:
    text = hit.chunk.text
    spans = split_sentences(text) or [(0, len(text))]
    return [piece for a, b in spans for piece in _pieces(text, a, b)]


def score_sentences(question: str, hits: Sequence[Hit]) -> list[list[_Sentence]]:
    """Each hit's sentences with a score: the rarity-weighted question grams they contain."""
    wanted = question_features(question).grams
    spans = [_sentences(h) for h in hits]
    grams = [[features(h.chunk.text[a:b]).grams & wanted for a, b in sp] for h, sp in zip(hits, spans)]
    df: Counter[str] = Counter(g for per_hit in grams for gs in per_hit for g in gs)
    total = max(1, sum(len(per_hit) for per_hit in grams))
    out: list[list[_Sentence]] = []
    for hit, sp, per_hit in zip(hits, spans, grams):
        text = hit.chunk.text
        rows: list[_Sentence] = []
        header: int | None = None
        for i, ((a, b), gs) in enumerate(zip(sp, per_hit)):
            in_table = is_table_row(text[a:b])
            if in_table and (i == 0 or not is_table_row(text[sp[i - 1][0] : sp[i - 1][1]])):
                header = i
            score = sum(math.log(1 + total / df[g]) for g in gs)
            rows.append(_Sentence(a, b, score, header if in_table and header != i else None))
        out.append(rows)
    return out


def best_sentences(question: str, hits: Sequence[Hit]) -> list[str]:
    """The sentence of each hit that best matches the question (its first one when none does),
    scored once over all the hits, as the prompt's windows are."""
    out: list[str] = []
    for hit, rows in zip(hits, score_sentences(question, hits)):
        # on a tie the fuller sentence wins: a heading repeats the question's words and says nothing
        best = max(
            range(len(rows)),
            key=lambda i: (round(rows[i].score, 6), min(rows[i].end - rows[i].start, 60) if rows[i].score else 0, -i),
        )
        out.append(hit.chunk.text[rows[best].start : rows[best].end].strip())
    return out


def _plan(rows: list[_Sentence]) -> list[list[int]]:
    """The order in which one hit's sentences are offered: best, its neighbours (after, before),
    the next best and its neighbours... A table row comes with its header row."""
    order = sorted(range(len(rows)), key=lambda i: (-rows[i].score, i))
    seeds = [i for i in order if rows[i].score > 0][:3] or [0]
    steps: list[list[int]] = []
    seen: set[int] = set()

    def add(i: int) -> None:
        if 0 <= i < len(rows) and i not in seen:
            group = [i]
            header = rows[i].header
            if header is not None and header not in seen:
                group.insert(0, header)
            seen.update(group)
            steps.append(group)

    for seed in seeds:
        add(seed)
        add(seed + 1)
        add(seed - 1)
    # then the rest, nearest to what is already chosen first, so a large budget ends at whole chunks
    for i in sorted(range(len(rows)), key=lambda i: (min(abs(i - x) for x in seen), i)):
        add(i)
    return steps


def select_windows(
    question: str,
    hits: Sequence[Hit],
    budget: int,
    count_tokens: CountTokens,
    overhead: Callable[[Hit], int],
    unit_tokens: int = 0,
) -> list[Window]:
    """Windows of `hits` whose source blocks fit `budget` tokens (tags included via `overhead`).

    Rounds go through the hits in rank order: each hit's steps are its best sentence, the sentence
    after it, the one before, the next best..., then the rest nearest first; the top hit takes
    TOP_STEPS steps a round. A step that does not fit is skipped (a shorter later one may still fit).
    Hits that got nothing are left out of the prompt. Each sentence costs its tokens, a newline and
    `unit_tokens` (its "[n] " number). (TOP_STEPS and the order were chosen on how
    often the bench's gold answers land inside the prompt: 26 -> 31 of 41 at 450 tokens.)
    """
    scored = score_sentences(question, hits)
    windows = [Window(h, rows) for h, rows in zip(hits, scored)]
    plans = [_plan(rows) for rows in scored]
    cost_cache: dict[tuple[int, int], int] = {}

    def cost(w: int, i: int) -> int:
        if (w, i) not in cost_cache:
            s = windows[w].sentences[i]
            cost_cache[(w, i)] = count_tokens(hits[w].chunk.text[s.start : s.end]) + 1 + unit_tokens
        return cost_cache[(w, i)]

    cap = max(24, int(budget * MAX_SENTENCE_SHARE))
    spent = 0
    rounds = max((len(p) for p in plans), default=0)
    schedule: list[tuple[int, int]] = []  # (step of that hit's plan, hit)
    for r in range(rounds):
        schedule += [(r * TOP_STEPS + k, 0) for k in range(TOP_STEPS)]
        schedule += [(r, w) for w in range(1, len(plans))]
    for r, w in schedule:
        plan = plans[w]
        if r >= len(plan):
            continue
        group = [i for i in plan[r] if i not in windows[w].chosen]
        if any(cost(w, i) > cap for i in group):
            continue  # an overlong "sentence" (an unpunctuated page, a huge table row)
        extra = sum(cost(w, i) for i in group) + (overhead(hits[w]) if not windows[w].chosen else 0)
        if spent + extra <= budget:
            windows[w].chosen.update(group)
            spent += extra
    return [w for w in windows if w.chosen]
