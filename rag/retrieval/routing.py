"""Document routing: a question that names a company, a form or a period finds that document's chunks.

Long filings share one vocabulary ("net sales", "capital expenditures"), so chunk search finds the
right *kind* of page in the wrong filing. Each document gets an identity at query time, built without
an LLM from what names it: its file name(s), its title and the capitalised words and years of its
first page ("3M COMPANY", "FORM 10-K", "fiscal year ended December 31, 2022"). A question's words
are matched against every identity, weighted by how few documents share them (IDF: "Inc",
"SECURITIES" or "股份有限公司" weigh almost nothing), and glued pairs of question words match run-
together names ("Best Buy" ↔ BESTBUY). Routing is soft: it only adds searches scoped to the
matched documents to the fusion, and only when one document group clearly wins.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rag.protocols import Store
from rag.records import DocumentInfo
from rag.retrieval.periods import FISCAL, YEAR, fiscal_year
from rag.text.features import EN_STOP, cjk_bigrams

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-&][A-Za-z0-9]+)*")
_CAPITALISED = re.compile(r"\b(?:[A-Z][A-Za-z0-9&]*|[0-9]+[A-Z][A-Za-z0-9]*)(?:[-][A-Z0-9]+)?\b")
_FORM = re.compile(r"\b(10|20|40)-?([KQF])\b|\b(8)-?(K)\b", re.IGNORECASE)
# Unlike a question's "Q3", a file name's quarter follows its year: "2023Q4".
_QUARTER = re.compile(r"(?<![A-Za-z])Q([1-4])(?![0-9])", re.IGNORECASE)
# Words every filing's cover page has: not identity, whatever their IDF in a small knowledge base.
_BOILERPLATE = frozenset(
    "united states securities exchange commission washington form annual report quarterly current "
    "pursuant section act fiscal year ended transition period commission file number inc corp "
    "corporation company co ltd plc limited group holdings the of and for to".split()
)
_ZH_GENERIC = frozenset("股份 份有 有限 限公 公司 集团 科技 技股 发展 招股 股说 说明 明书".split())
FIRST_PAGES = 2  # cover pages read for the identity
MIN_DOCUMENTS = 3  # below this, every document is "the" document: routing has nothing to choose


def _norm_form(match: re.Match[str]) -> str:
    num, letter = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return f"form{num}{letter.lower()}"


def period_terms(text: str) -> set[str]:
    """Years, fiscal years, quarters and SEC form names, normalised ("FY22" -> "2022", "10-K" -> "form10k")."""
    out = {m.group(1) for m in YEAR.finditer(text)} | {fiscal_year(m) for m in FISCAL.finditer(text)}
    out |= {f"q{m.group(1)}" for m in _QUARTER.finditer(text)}
    out |= {_norm_form(m) for m in _FORM.finditer(text)}
    return out


def _cjk_grams(text: str) -> set[str]:
    return cjk_bigrams(text) - _ZH_GENERIC


def _name_tokens(text: str) -> set[str]:
    """Latin name tokens of a file name or title: split on separators and letter/digit joins."""
    out: set[str] = set()
    for tok in _TOKEN.findall(text.replace("_", " ")):
        low = tok.lower()
        out.add(low)
        out |= {p for p in re.split(r"[-&]|(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])", low) if len(p) > 1}
    return {t for t in out if t not in EN_STOP and not t.isdigit()}


@dataclass(slots=True)
class Identity:
    doc_id: str
    names: set[str] = field(default_factory=set)  # entity terms: words, CJK bigrams
    periods: set[str] = field(default_factory=set)


def document_identity(info: DocumentInfo, cover: str) -> Identity:
    """What names a document: file names and title (all words), cover page (capitalised words only)."""
    ident = Identity(info.id)
    labels = [info.title, *(Path(p).stem for p in [info.source, *info.paths] if p)]
    for label in labels:
        ident.names |= _name_tokens(label) | _cjk_grams(label)
        ident.periods |= period_terms(label.replace("_", " "))
    # The cover's capitalised Latin words only: Chinese cover text is body text as often as a title
    # (a wiki volume starts with an article), so Chinese identity comes from names and titles.
    head = "\n".join(cover.splitlines()[:40])
    ident.names |= {w.lower() for w in _CAPITALISED.findall(head) if len(w) > 1} - EN_STOP
    ident.periods |= period_terms(head)
    ident.names -= _BOILERPLATE
    return ident


def _question_terms(question: str) -> tuple[set[str], set[str]]:
    """Name-like words of a question (capitalised, all-caps, with digits; glued runs of them) and periods."""
    raw = _TOKEN.findall(question)
    periods = period_terms(question)
    named = [w for w in raw if (w[0].isupper() or any(c.isdigit() for c in w)) and not w.isdigit()]
    words = [w.lower() for w in named]
    names = {w for w in words if w not in EN_STOP and w not in _BOILERPLATE and w not in periods}
    names |= {a + b for a, b in zip(words, words[1:], strict=False)}  # "Best Buy" -> "bestbuy"
    names |= {a + b + c for a, b, c in zip(words, words[1:], words[2:], strict=False)}
    names |= _cjk_grams(question)
    return names, periods


@dataclass(slots=True)
class Route:
    """Documents a question names, each with its match in [0, 1] (1 = every identity term matched)."""

    scores: dict[str, float]
    confident: bool

    @property
    def doc_ids(self) -> list[str]:
        return sorted(self.scores, key=lambda d: -self.scores[d])


class DocumentRouter:
    """Identities of a store's documents (rebuilt when the document set changes) and question matching."""

    PERIOD_WEIGHT = 0.5  # a year matches many filings; a name singles one out
    MIN_MATCH = 0.5  # share of the question's identity weight the best document must cover
    NEAR_BEST = 0.85  # documents within this share of the best are routed together

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._key: tuple[str, ...] = ()
        self._identities: list[Identity] = []
        self._df: dict[str, int] = {}

    def _refresh(self) -> None:
        docs = self.store.list_documents()
        key = tuple(sorted(f"{d.id}:{d.chunks}:{len(d.paths)}" for d in docs))
        if key == self._key:
            return
        identities = []
        for info in docs:
            cover = []
            for page in range(1, min(info.pages, FIRST_PAGES) + 1):
                try:
                    cover.append(self.store.page_text(info.id, page))
                except Exception:  # noqa: BLE001 - a page the store lacks only means less identity
                    break
            identities.append(document_identity(info, "\n".join(cover)))
        df: dict[str, int] = {}
        for ident in identities:
            for term in ident.names | {f"@{p}" for p in ident.periods}:
                df[term] = df.get(term, 0) + 1
        self._key, self._identities, self._df = key, identities, df

    def route(self, question: str) -> Route:
        with self._lock:
            self._refresh()
            identities, df = self._identities, self._df
        n = len(identities)
        if n < MIN_DOCUMENTS:
            return Route({}, False)
        names, periods = _question_terms(question)
        weights: dict[str, float] = {}
        for term in names:
            if term in df and df[term] < n:
                weights[term] = math.log(1 + n / df[term])
        for p in periods:
            if f"@{p}" in df and df[f"@{p}"] < n:
                weights[f"@{p}"] = self.PERIOD_WEIGHT * math.log(1 + n / df[f"@{p}"])
        total = sum(weights.values())
        if not total or not any(not t.startswith("@") for t in weights):
            return Route({}, False)  # only a year: too unsure to scope
        scores: dict[str, float] = {}
        for ident in identities:
            got = sum(w for t, w in weights.items() if (t[1:] in ident.periods if t[0] == "@" else t in ident.names))
            if got and any(t in ident.names for t in weights if t[0] != "@"):
                scores[ident.doc_id] = got / total
        if not scores:
            return Route({}, False)
        best = max(scores.values())
        routed = {d: s for d, s in scores.items() if s >= self.NEAR_BEST * best}
        confident = best >= self.MIN_MATCH and len(routed) <= max(2, n // 4)
        return Route(routed, confident)
