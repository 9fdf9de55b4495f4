"""Content features of text: what claims, passages and questions are compared on.

Chinese: character bigrams; English: stemmed words without stopwords; numbers normalised, each with
the unit or word that follows it ("18名" is not "18个", "907 employees" is not "907 stores").
Also the refusal phrases a model uses when the documents do not answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.store.analyzer import EN_STOP as KEYWORD_EN_STOP
from rag.store.analyzer import stem
from rag.text.sentences import MARKER_RE

# A short answer ("敬师日", "Tim Cook") carries too few words to check on its own: it must stand in a
# passage that is about the question (rag.support).
SHORT_CLAIM_GRAMS = 6
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9])\d+(?:[.,]\d+)*")  # "Q3"/"FY2023" are names, "$5.2" is a number
_NEXT_WORD = re.compile(r"[ \t]?(?:%|percent\b)?[ \t]*([A-Za-z][A-Za-z'’]*)")
# The keyword analyzer's stopwords plus the words a model uses to talk about its sources ("according to
# the documents", "the text says"): they carry no claim. BM25 keeps those words searchable (a question
# may ask about a "source" or a "document"), so the two lists differ on purpose; one is built on the other.
EN_STOP = KEYWORD_EN_STOP | frozenset(
    "also according source sources document documents based stated states say says said mentioned mention provided text information answer following shown show shows given".split()
)
ZH_STOP_GRAMS = frozenset(
    "根据 据资 资料 料中 料显 显示 文档 档中 档显 提到 中提 所述 来源 可知 我们 以上 上资 如下".split()
)
# Question words: they never appear in the passage that answers the question.
ZH_QUESTION_GRAMS = frozenset(
    "什么 是什 哪里 哪个 哪一 哪些 哪位 哪年 多少 是谁 为什 怎么 怎样 如何 是否 是哪 有多 几个 请问 么时".split()
)

REFUSAL_PATTERNS = re.compile(
    r"(documents?|sources?|context|text|passages?)\s+(do|does|did)\s+not\s+(say|mention|contain|provide|specify|state|include)"
    r"|(don't|doesn't|do not|does not|cannot|can't|could not|couldn't|unable to)\s+(find|determine|answer|locate|know)"
    r"|no (relevant |such |specific )?(information|mention|data|answer)"
    r"|not (mentioned|provided|specified|stated|available|found) in"
    r"|没有(相关|提到|提及|提供|找到|涉及|说明|明确)|未(提及|提到|提供|找到|说明|涉及|披露)|无(法回答|法确定|相关信息)|不包含|并未(提及|说明|提到)",
    re.IGNORECASE,
)


def norm_number(raw: str) -> str:
    """'1,234.50' -> '1234.5', '007' -> '7', '3.00' -> '3', '4.0.2' stays a version."""
    whole, _, frac = raw.replace(",", "").partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0").rstrip(".")
    return f"{whole}.{frac}" if frac else whole


@dataclass(slots=True)
class Features:
    grams: set[str]
    numbers: set[str]
    # number -> the Chinese unit or measure word right after it ("" for none): "18名" is not "18个"
    units: dict[str, set[str]] = field(default_factory=dict)


def cjk_bigrams(text: str) -> set[str]:
    """Character bigrams of every run of Chinese characters in `text` (a lone character gives none)."""
    grams: set[str] = set()
    for run in CJK_RUN.findall(text):
        grams.update(run[i : i + 2] for i in range(len(run) - 1))
    return grams


def features(text: str) -> Features:
    """Content grams (Chinese character bigrams, stemmed English words, numbers) and the numbers alone."""
    text = MARKER_RE.sub(" ", text)
    grams = cjk_bigrams(text) | {run for run in CJK_RUN.findall(text) if len(run) == 1}
    grams -= ZH_STOP_GRAMS
    for word in _WORD.findall(text):
        w = word.lower().replace("’", "'").removesuffix("'s")
        if w not in EN_STOP and len(w) > 1:
            grams.add(stem(w))
    flat = text.replace("，", ",")
    units: dict[str, set[str]] = {}
    for m in _NUMBER.finditer(flat):
        after = flat[m.end() : m.end() + 1]
        unit = after if CJK_RUN.match(after) else ""
        if not unit and (word := _NEXT_WORD.match(flat, m.end())):  # "907 employees", "47 new stores"
            w = word.group(1).lower()
            unit = "" if w in EN_STOP or len(w) < 2 else "en:" + stem(w)
        units.setdefault(norm_number(m.group()), set()).add(unit)
    numbers = set(units)
    grams |= numbers
    return Features(grams, numbers, units)


def missing_numbers(claim: Features, source: Features, allowed: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The claim's numbers the source lacks, or has without what they count: a Chinese unit must
    follow the number there too ("18个课室" does not back "18名学生"); the English word that follows
    it ("907 employees") must be in the passage, which may be a table row and its header. A number
    the question gave (`allowed`) need not be there."""
    missing = set()
    for number in claim.numbers - set(allowed):
        have = source.units.get(number)
        wanted = claim.units.get(number, set()) - {""}
        zh = {u for u in wanted if not u.startswith("en:")}
        en = {u[3:] for u in wanted - zh}
        if have is None or not en <= source.grams or (zh and "" not in have and not zh <= have):
            missing.add(number)
    return missing


def plain(text: str) -> str:
    """Letters, digits and CJK only, lower-cased: how a short answer is looked up in a source."""
    return "".join(re.findall(r"\w", MARKER_RE.sub("", text))).lower()


_NAME = re.compile(r"(?<=[\w,;:'’\"”)] )[A-Z][a-z]+\b")  # a capitalised word not starting its sentence


def question_features(question: str) -> Features:
    """The question's content grams, question words removed."""
    f = features(question)
    return Features(f.grams - ZH_QUESTION_GRAMS, f.numbers)


def question_names(question: str) -> set[str]:
    """Names the question asks about ("China", "Kenvue"): a short answer must stand where they do."""
    return {stem(m.lower()) for m in _NAME.findall(question)} - EN_STOP


def is_short_claim(claim: Features) -> bool:
    """A name or a bare figure ("敬师日", "907", "5.3港元"): too few words besides its numbers to check."""
    return len(claim.grams - claim.numbers) < SHORT_CLAIM_GRAMS


def is_refusal(text: str) -> bool:
    """True when the text says the documents do not contain the answer."""
    return bool(REFUSAL_PATTERNS.search(text))
