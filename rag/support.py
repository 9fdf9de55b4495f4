"""Does an evidence unit support a claim? Hard constraints first, then lexical or semantic backing.

A claim (one sentence of an answer, or the part of it before a marker) is supported by a unit when
- its numbers, with the unit or word that follows each, stand in the unit itself (a table row may
  use its header row) — a number the question gave need only be in the unit's context;
- the names it states (capitalised Latin words) are in the unit's context or elsewhere in what the
  prompt shows of its document, when that is Latin script (a Chinese page spells names its own way);
- and its content is backed: either enough of its content grams are in the unit's context
  (lexical), or the embedder finds the claim and the context similar (semantic). The embedder is
  multilingual, so an English claim about a Chinese page can verify.
A short answer ("Ada Wong", "907") has too few words to judge on their own: it must stand in the
unit, and the unit's context must cover the question (lexically or semantically).

Thresholds live in GroundingSettings (rag/settings/retrieval.py) and were calibrated with
bench/grounding_calibrate.py on the bench dev questions only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rag.lang import cjk_ratio
from rag.protocols import Embedder
from rag.records import EvidenceUnit
from rag.store.analyzer import stem
from rag.text.features import (
    EN_STOP,
    Features,
    features,
    is_short_claim,
    missing_numbers,
    plain,
    question_features,
    question_names,
)

_HAN = re.compile(r"[\u3400-\u9fff]")
_TECHNICAL = re.compile(r"\b(?:[A-Za-z]*[a-z][A-Z][A-Za-z]*|[A-Z]{2,}[A-Za-z]*)\b")  # LilyPond, MusicXML, CUPS


def technical_names(text: str) -> set[str]:
    """Names a translation keeps as they are: inner capitals, acronyms."""
    return {stem(m.lower()) for m in _TECHNICAL.findall(text)} - EN_STOP


NAME_GRAMS = 3  # an English claim about a Chinese page this short is a name, judged with the question


@dataclass(slots=True)
class Bars:
    """The thresholds of one support decision (from GroundingSettings)."""

    lexical: float = 0.5  # share of the claim's content grams in the unit's context
    semantic: float = 0.9  # cosine between claim and unit
    question_lexical: float = 0.4  # a short answer's unit must cover this share of the question...
    question_semantic: float = 0.9  # ...or be this similar to the question
    margin: float = 0.03  # ...or stand out by this much from the median of the prompt's other units


@dataclass(slots=True)
class Verdict:
    supported: bool
    lexical: float = 0.0
    semantic: float | None = None
    reason: str = ""  # why not: "numbers", "names", "content", "question"
    own: float = 0.0  # the lexical share in the unit's own text (its context aside)


@dataclass(slots=True)
class SupportChecker:
    """Judges claims against the units of one prompt; embeddings are computed once, lazily."""

    question: str
    units: Sequence[EvidenceUnit]
    embedder: Embedder | None
    bars: Bars = field(default_factory=Bars)
    words_from: str = ""  # the question in the passages' language (rag.crosslingual), when translated
    _asked: Features = field(init=False)
    _allowed: set[str] = field(init=False)
    _names: set[str] = field(init=False)
    _feats: dict[str, tuple[Features, Features]] = field(init=False, default_factory=dict)
    _vectors: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    _anchor_grams: set[str] | None = field(init=False, default=None)
    _docs: dict[str, set[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._asked = question_features(self.words_from or self.question)
        self._allowed = features(self.question).numbers | features(self.words_from).numbers
        self._names = question_names(self.question)

    # -- features and vectors ------------------------------------------------------------------

    def _unit_feats(self, unit: EvidenceUnit) -> tuple[Features, Features]:
        """(features of the unit itself, features of its context)."""
        if unit.id not in self._feats:
            own = unit.text if unit.kind != "row" else unit.context  # a row's numbers are read with its header
            self._feats[unit.id] = (features(own), features(unit.context or unit.text))
        return self._feats[unit.id]

    @staticmethod
    def _body(unit: EvidenceUnit) -> str:
        """What a unit's meaning is judged on: its own sentence (a row: with its header row). Its
        neighbours would blur it — every sentence of a paragraph would look alike."""
        return unit.context if unit.kind == "row" else unit.text

    def similarity(self, text: str, unit: EvidenceUnit) -> float | None:
        """Cosine between `text` and the unit (None without an embedder)."""
        if self.embedder is None:
            return None
        wanted = list(dict.fromkeys(t for t in (text, *(self._body(u) for u in self.units)) if t not in self._vectors))
        if wanted:
            # every unit in one call: the next claims of this answer need them too
            vectors = np.asarray(self.embedder.embed_documents(wanted), dtype=np.float32)
            for t, v in zip(wanted, vectors):
                self._vectors[t] = v / (np.linalg.norm(v) or 1.0)
        return float(self._vectors[text] @ self._vectors[self._body(unit)])

    def _semantic(self, text: str, unit: EvidenceUnit, bar: float) -> tuple[bool, float | None]:
        """Whether `text` means what `unit` says: similar above `bar`, or the unit stands out from
        the other units of the prompt by `bars.margin` (cosines of a multilingual embedder run
        lower across languages, but the right sentence still stands out)."""
        sim = self.similarity(text, unit)
        if sim is None:
            return False, None
        if sim >= bar:
            return True, sim
        others = sorted(self.similarity(text, u) or 0.0 for u in self.units if u.citable and u.id != unit.id)
        if len(others) < 2 or sim < others[-1]:
            return False, sim
        return sim - others[len(others) // 2] >= self.bars.margin, sim

    def _doc_grams(self, doc_id: str) -> set[str]:
        """Every gram the prompt shows from one document (a name the claim uses may be stated once)."""
        if doc_id not in self._docs:
            self._docs[doc_id] = set().union(*(self._unit_feats(u)[1].grams for u in self.units if u.doc_id == doc_id))
        return self._docs[doc_id]

    def _anchors(self) -> set[str]:
        """The question's grams that the fewest units hold (among those some unit holds)."""
        if self._anchor_grams is None:
            counts = {
                g: sum(g in self._unit_feats(u)[0].grams for u in self.units if u.citable) for g in self._asked.grams
            }
            present = {g: c for g, c in counts.items() if c}
            fewest = min(present.values(), default=0)
            self._anchor_grams = {g for g, c in present.items() if c == fewest}
        return self._anchor_grams

    # -- the decision --------------------------------------------------------------------------

    def check(self, claim_text: str, unit: EvidenceUnit) -> Verdict:
        """Whether `unit` supports `claim_text`."""
        claim = features(claim_text)
        own, context = self._unit_feats(unit)
        if not claim.grams:
            return Verdict(False, reason="content")
        latin = cjk_ratio(unit.context or unit.text) < 0.3
        cross = not latin and not _HAN.search(claim_text)  # an English claim about a Chinese page
        if cross:  # "1,526.45 ten-thousand yuan": the word after a figure is not spelled on a Chinese page
            claim = Features(
                claim.grams,
                claim.numbers,
                {n: {u for u in us if not u.startswith("en:")} for n, us in claim.units.items()},
            )
        # numbers the question gave say nothing about where the answer is: they need only be nearby
        if missing_numbers(claim, own, self._allowed & context.numbers):
            return Verdict(False, reason="numbers")
        names = technical_names(claim_text) | (question_names(claim_text) if latin else set())
        if not names <= context.grams | self._doc_grams(unit.doc_id):
            # "Springfield, Illinois": a place no passage names; "LilyPond" on a Chinese page that never
            # mentions it (a Chinese page spells "Zou" its own way, but keeps "LilyPond" as it is)
            return Verdict(False, reason="names")
        if (
            is_short_claim(claim)
            and self._asked.grams
            and not (cross and len(claim.grams - claim.numbers) > NAME_GRAMS)
        ):
            return self._short(claim_text, claim, unit, own, context)
        # numbers were checked above; the words must back the rest: a row with the right year and
        # figure but another line item ("Products") does not back "Services revenue was 1,200"
        words = claim.grams - claim.numbers or claim.grams
        mine = len(words & own.grams) / len(words)
        lexical = len(words & context.grams) / len(words)
        # the quote must carry the claim: the unit itself holds the claim's words, or at least half
        # of what the bar asks while its neighbours hold the rest ("It was founded in 1987.")
        if mine >= self.bars.lexical or (lexical >= self.bars.lexical and mine >= self.bars.lexical / 2):
            return Verdict(True, lexical, own=mine)
        ok, semantic = self._semantic(claim_text, unit, self.bars.semantic)
        if ok:
            return Verdict(True, lexical, semantic, own=mine)
        return Verdict(False, lexical, semantic, "content", mine)

    def _short(self, text: str, claim: Features, unit: EvidenceUnit, own: Features, context: Features) -> Verdict:
        """A name or a figure: it stands in the unit, and the unit is about the question."""
        needle = plain(text)
        if claim.numbers:
            stands = bool(claim.numbers & own.numbers)
        else:
            stands = len(needle) >= 2 and needle in plain(unit.text)
            if not stands and cjk_ratio(unit.text) >= 0.3 and not _HAN.search(text):
                # a Latin name for a Chinese page cannot be matched by letters: judge its meaning —
                # the answer must bring the question closer to the unit, not ride on the question
                ok, sim = self._semantic(f"{self.question} {text}", unit, self.bars.semantic)
                ok = ok and sim is not None and sim > (self.similarity(self.question, unit) or 0.0)
                return Verdict(ok, 0.0, sim, "" if ok else "content")
        if not stands:
            return Verdict(False, reason="content")
        if cjk_ratio(unit.context or unit.text) < 0.3 and not self._names <= context.grams:
            return Verdict(False, reason="names")  # "127" stores, but in Canada, not China
        coverage = len(self._asked.grams & context.grams) / len(self._asked.grams)
        # the unit itself must hold what the question singles out — its rarest words among the
        # prompt's units — not only the subject every unit shares: "2023" in "ACME annual report
        # 2023." does not answer "When was ACME founded?"
        if coverage >= self.bars.question_lexical and own.grams & self._anchors():
            return Verdict(True, coverage)
        ok, semantic = self._semantic(self.question, unit, self.bars.question_semantic)
        return Verdict(ok, coverage, semantic, "" if ok else "question")

    def best(self, claim_text: str, candidates: Sequence[EvidenceUnit]) -> tuple[EvidenceUnit, Verdict] | None:
        """The candidate that supports the claim best (its own words, its passage's, then similarity)."""
        found: list[tuple[float, float, int, EvidenceUnit, Verdict]] = []
        for i, unit in enumerate(candidates):
            verdict = self.check(claim_text, unit)
            if verdict.supported:
                found.append((verdict.own, verdict.lexical, verdict.semantic or 0.0, -i, unit, verdict))
        if not found:
            return None
        *_, unit, verdict = max(found, key=lambda x: x[:4])
        return unit, verdict

    def relevance(self, unit: EvidenceUnit) -> tuple[float, float | None]:
        """How strongly `unit` bears on the question: (lexical coverage of the question, similarity)."""
        _, context = self._unit_feats(unit)
        coverage = len(self._asked.grams & context.grams) / len(self._asked.grams) if self._asked.grams else 0.0
        return coverage, self.similarity(self.question, unit)
