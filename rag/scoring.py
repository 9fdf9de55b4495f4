"""Answer-correctness scoring against a reference answer: pure functions, no model.

One implementation for `citeqa eval --answers` (rag.eval) and the answer benchmark (bench/), so both
report the same numbers. Chinese and English: numbers are compared as normalised values, text as
word tokens (English) or character bigrams (Chinese).
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from rag.store.analyzer import EN_STOP, ZH_STOP
from rag.text.features import CJK_RUN, norm_number
from rag.text.sentences import MARKER_RE

# With numbers in the reference the numbers carry the answer; a little wording overlap is enough to
# rule out a right number in an unrelated sentence.
MIN_F1_WITH_NUMBERS = 0.2
# References this short ("44.5 percent", "十二亿元") leave F1 meaningless once the numbers match.
SHORT_REFERENCE_TOKENS = 3
# Without numbers, half the reference's content must be there (or all of it verbatim).
MIN_F1_TEXT = 0.5

# A comma groups thousands only before exactly three digits: "12,5" in running text is two numbers.
_NUMBER_RE = re.compile(r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NON_WORD_RE = re.compile(r"[\W_]+")
# Full-width ASCII forms (１２，３４５．６％) -> ASCII; the ideographic space -> space.
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def _clean(text: str) -> str:
    """Full-width forms to ASCII, citation markers out ("[3]" is not a number of the answer)."""
    return MARKER_RE.sub(" ", text.translate(_FULL_WIDTH).replace("’", "'"))


def _numbers_with_precision(text: str) -> dict[str, int]:
    """Normalised number -> decimal places as written (the precision an answer is rounded to)."""
    out: dict[str, int] = {}
    for m in _NUMBER_RE.finditer(_clean(text)):
        raw = m.group(0)
        places = len(raw.partition(".")[2])
        norm = norm_number(raw)
        out[norm] = max(out.get(norm, 0), places)
    return out


def answer_numbers(text: str) -> set[str]:
    """The numbers in `text`, normalised (separators, %, leading/trailing zeros, full-width digits)."""
    return set(_numbers_with_precision(text))


def _rounds_to(answer_value: str, reference: str, places: int) -> bool:
    """True when the answer's value, rounded to the reference's precision, is the reference."""
    try:
        quantum = Decimal(1).scaleb(-places)
        return Decimal(answer_value).quantize(quantum, ROUND_HALF_UP) == Decimal(reference)
    except InvalidOperation:
        return False


def numbers_match(answer: str, reference: str) -> bool | None:
    """Every reference number is in the answer (or rounds from one); None without reference numbers."""
    ref = _numbers_with_precision(reference)
    if not ref:
        return None
    got = answer_numbers(answer)
    return all(r in got or any(_rounds_to(a, r, p) for a in got) for r, p in ref.items())


def content_tokens(text: str) -> list[str]:
    """English words (lower-cased, no stopwords), normalised numbers, and Chinese character bigrams."""
    text = _clean(text)
    out: list[str] = []
    for run in CJK_RUN.findall(text):
        if len(run) > 1:
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in ZH_STOP:  # a lone 的/是 between English words is noise, not content
            out.append(run)
    rest = CJK_RUN.sub(" ", text)
    out.extend(norm_number(m.group(0)) for m in _NUMBER_RE.finditer(rest))
    rest = _NUMBER_RE.sub(" ", rest).lower()
    out.extend(w for w in _WORD_RE.findall(rest) if w not in EN_STOP)
    return out


def token_f1(answer: str, reference: str) -> float:
    """F1 of the content tokens (see content_tokens) shared by answer and reference."""
    a, b = Counter(content_tokens(answer)), Counter(content_tokens(reference))
    common = sum((a & b).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def _squash(text: str) -> str:
    """Lower-case, no whitespace or punctuation: the form a verbatim match is checked in."""
    return _NON_WORD_RE.sub("", _clean(text).lower())


def correctness(answer: str, reference: str, *, refused: bool = False) -> dict[str, object]:
    """Whether `answer` gives the `reference` answer: keys numbers_match, f1, correct.

    With reference numbers: all of them must match and (f1 >= MIN_F1_WITH_NUMBERS or the reference
    is short). Without: the answer contains the reference verbatim or f1 >= MIN_F1_TEXT. A refusal
    is never correct.
    """
    nums = numbers_match(answer, reference)
    f1 = token_f1(answer, reference)
    squashed_ref = _squash(reference)
    if refused or not squashed_ref:
        correct = False
    elif nums is not None:
        short = len(content_tokens(reference)) <= SHORT_REFERENCE_TOKENS
        correct = nums and (f1 >= MIN_F1_WITH_NUMBERS or short)
    else:
        correct = squashed_ref in _squash(answer) or f1 >= MIN_F1_TEXT
    return {"numbers_match": nums, "f1": round(f1, 4), "correct": bool(correct)}
