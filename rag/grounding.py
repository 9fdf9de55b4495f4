"""Grounded answers, sentence by sentence: only what verifies is ever shown.

The model writes with `[n]` markers that name evidence units (rag.units). `Grounder.feed` takes its
text as it streams and gives back each finished sentence once it is verified, with its final
markers; the streamed text therefore *is* the final answer, and the numbers a user sees while it
streams are the numbers of the answer, its citations, /sources and the web page.

For each sentence:
- a refusal ("the documents do not say") or a question is not shown; a refusal is remembered;
- each marker's claim (the sentence, or the part before the marker) must be supported by a cited
  unit (rag.support); a marker to a unit that does not support it is re-pointed to the unit that
  does, or the sentence is held back as unsupported;
- a sentence without markers is cited when a unit supports it at the auto-cite bar;
- filler without content ("Sure.") is shown only in front of a verified sentence.
A citation quotes its unit: `page_text[char_start:char_end] == quote` by construction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag.records import Citation, EvidenceUnit
from rag.support import SupportChecker
from rag.text.features import features, is_refusal, is_short_claim
from rag.text.sentences import (
    CLOSERS,
    LIST_PREFIX,
    MARKER_RE,
    NESTED_PLACEHOLDER_RE,
    PLACEHOLDER_RE,
    SPACED_MARKER_RE,
    parse_markers,
    split_sentences,
)
from rag.units import numbered

MIN_CLAIM_GRAMS = 3  # fewer content grams, no number, no marker: filler ("Sure.", "是的。")
_REPEATED_MARKER = re.compile(r"(\[\d+\])(?:\s*\1)+")
_OPEN_MARKER = re.compile(r"[\[【][^\]】]{0,12}$")  # a marker still being written
_ENDING = "。.!！?？;；:：" + CLOSERS  # what an added marker goes in front of


def citation_for(unit: EvidenceUnit) -> Citation:
    return Citation(
        n=unit.n,
        doc=unit.doc,
        page=unit.page,
        quote=unit.text,
        char_start=unit.char_start,
        char_end=unit.char_end,
        verified=True,
        chunk_id=unit.chunk_id,
        doc_id=unit.doc_id,
    )


@dataclass(slots=True)
class Grounder:
    """Verifies one answer as it streams; `feed` and `finish` return the text that may be shown."""

    checker: SupportChecker
    units: Sequence[EvidenceUnit]
    auto_cite_lexical: float = 0.7
    citations: list[Citation] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    refusal: bool = False
    content_sentences: int = 0
    repointed: int = 0
    removed_markers: int = 0
    _buffer: str = ""
    _shown: str = ""
    _filler: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _by_n: dict[int, EvidenceUnit] = field(init=False)

    def __post_init__(self) -> None:
        self._by_n = numbered(self.units)

    @property
    def text(self) -> str:
        return self._shown

    def feed(self, piece: str) -> str:
        """Add model text; return the newly shown text (finished, verified sentences only)."""
        self._buffer += piece
        spans = split_sentences(self._buffer)
        if len(spans) < 2:
            return ""
        last = self._buffer[spans[-1][0] :]
        if not re.search(r"[^\W\d_]", MARKER_RE.sub("", last)) or _OPEN_MARKER.search(self._buffer):
            return ""  # the last "sentence" may still be a marker of the one before it: wait
        cut = spans[-1][0]
        done, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._show(done)

    def finish(self) -> str:
        """The rest of the stream, now that it has ended."""
        done, self._buffer = self._buffer, ""
        return self._show(done)

    # -- one batch of finished sentences -------------------------------------------------------

    def _show(self, text: str) -> str:
        text = PLACEHOLDER_RE.sub("", NESTED_PLACEHOLDER_RE.sub(r"\1", text))
        out = ""
        for s, e in split_sentences(text):
            verified = self._sentence(text[s:e])
            if verified is None or (verified and verified in self._seen):
                continue  # held back, or said already (small models repeat themselves)
            self._seen.add(verified)
            if verified == "":  # filler: shown only in front of a claim that verifies
                self._filler.append(text[s:e])
                continue
            for part in [*self._filler, verified]:
                out += self._joined(out, part)
            self._filler.clear()
        self._shown += out
        return out

    def _joined(self, out: str, part: str) -> str:
        before = (self._shown + out)[-1:]
        if not before:
            return part
        sep = " " if before.isascii() and part[:1].isascii() and before not in "\n" else ""
        return sep + part

    def _sentence(self, sentence: str) -> str | None:
        """The sentence as shown (final markers), "" for filler, None when it is held back."""
        bare = LIST_PREFIX.sub("", SPACED_MARKER_RE.sub("", sentence)).strip()
        if is_refusal(bare):
            self.refusal = True
            return None
        if not bare.strip("。.，,；;：:!！ ") or bare.endswith(("?", "？")):
            return None  # a bare marker or a question claims nothing
        markers = parse_markers(sentence)
        if not markers:
            return self._uncited(sentence, bare)
        self.content_sentences += 1
        out, prev = "", 0
        for a, b, cited in markers:
            claim = MARKER_RE.sub("", sentence[prev:a])
            if len(features(LIST_PREFIX.sub("", claim)).grams) < 2:  # "According to [1], ..."
                claim = bare
            given = [self._by_n[n] for n in cited if n in self._by_n]
            self.removed_markers += len(cited) - len(given)
            chosen = [u for u in given if self.checker.check(claim, u).supported]
            if not chosen:
                found = self.checker.best(claim, [u for u in self._by_n.values() if u not in given])
                if found is None:
                    self.unsupported.append(bare)
                    return None
                chosen = [found[0]]
                self.repointed += bool(given)
            out += sentence[prev:a] + "".join(self._cite(u) for u in chosen)
            prev = b
        return _REPEATED_MARKER.sub(r"\1", out + sentence[prev:])  # "[6][6]" -> "[6]"

    def _uncited(self, sentence: str, bare: str) -> str | None:
        f = features(bare)
        filler = len(f.grams) < MIN_CLAIM_GRAMS and not f.numbers
        found = self.checker.best(bare, list(self._by_n.values()))
        # without a marker the model claimed no source: cite only on clear support (a short answer
        # passes on its own test, which already asks that its unit cover the question)
        clear = found is not None and (
            is_short_claim(f) or found[1].lexical >= self.auto_cite_lexical or found[1].semantic is not None
        )
        if not clear or found is None:
            if filler:
                return ""  # "Sure.", "是的。": shown only in front of a verified claim
            self.content_sentences += 1
            self.unsupported.append(bare)
            return None
        self.content_sentences += 1
        at = len(sentence)
        while at > 0 and sentence[at - 1] in _ENDING:
            at -= 1
        spacer = " " if at and sentence[at - 1].isascii() and sentence[at - 1].isalnum() else ""
        return sentence[:at] + spacer + self._cite(found[0]) + sentence[at:]

    def _cite(self, unit: EvidenceUnit) -> str:
        if all(c.n != unit.n for c in self.citations):
            self.citations.append(citation_for(unit))
            self.citations.sort(key=lambda c: c.n)
        return f"[{unit.n}]"
