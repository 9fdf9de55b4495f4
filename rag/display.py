"""How an answer appears in a terminal (`citeqa ask` and `citeqa chat`): never a silent wait.

While the model reads its prompt (seconds on a CPU) the user already sees what retrieval found —
doc · page · best sentence, marked as retrieved, not an answer. On a terminal the status line and
that evidence are replaced by the answer as it streams; in a pipe or a file nothing is erased, so the
evidence lines stay, labelled. Only checked sentences stream (rag.grounding), so the answer is
printed once, with its final numbers, and then its verified citations.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from typing import TextIO

from rag.records import Answer, Retrieved, Status

QUOTE_CHARS = 200
STAGES = {
    "rewriting": "making the follow-up question standalone…",
    "retrieving": "searching the documents…",
    "translating": "translating the question to search the other language…",
    "thinking": "the model is reading the evidence…",
}


def one_line(text: str, limit: int, ellipsis: str = "…") -> str:
    """`text` with its whitespace collapsed, cut to `limit` characters (the cut marked by `ellipsis`)."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


def format_citations(answer: Answer) -> list[str]:
    """The lines printed under an answer: verified citations, then flagged unsupported sentences."""
    lines = [
        f'[{c.n}] {c.doc} · p.{c.page} · "{one_line(c.quote, QUOTE_CHARS)}"' for c in answer.citations if c.verified
    ]
    lines += [f"[unsupported] {one_line(s, QUOTE_CHARS)}" for s in answer.unsupported]
    return lines


def fit(text: str, columns: int) -> str:
    """`text` cut to `columns` terminal columns (Han characters take two), so a line never wraps:
    the erase that replaces transient lines counts lines, not rows."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used > columns - 1:
            return text[:i] + "…"
    return text


class AnswerPrinter:
    """Feeds the items of `QAPipeline.ask_stream(events=True)` to a terminal or a pipe."""

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.width = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
        self._transient = 0  # lines on screen that the next output replaces (terminal only)
        self._streamed: list[str] = []
        self._evidence_lines: list[str] = []
        self.answer: Answer | None = None

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _clear(self) -> None:
        if self._transient and self.tty:
            self._write(f"\r\x1b[{self._transient - 1}F\x1b[J" if self._transient > 1 else "\r\x1b[2K")
        self._transient = 0

    def _show(self, lines: list[str]) -> None:
        """Transient lines on a terminal (each cut to the width so none wraps); kept in a pipe."""
        self._clear()
        if self.tty:
            self._write("\n".join(fit(x, self.width) for x in lines))
            self._transient = len(lines)
        else:
            self._write("".join(line + "\n" for line in lines))

    def feed(self, item: object) -> None:
        if isinstance(item, Status):
            if self.tty and item.stage in STAGES and not self._streamed:
                keep = self._evidence_lines if item.stage == "thinking" else []
                self._show([*keep, STAGES[item.stage]])
        elif isinstance(item, Retrieved):
            lines = ["retrieved (not an answer yet):"]
            lines += [f"  · {e.doc} · p.{e.page} · {one_line(e.text, QUOTE_CHARS)}" for e in item.evidence]
            self._evidence_lines = lines
            self._show(lines)
        elif isinstance(item, Answer):
            self.finish(item)
        elif isinstance(item, str) and item:
            if not self._streamed:
                self._clear()
            self._streamed.append(item)
            self._write(item)

    def finish(self, answer: Answer) -> None:
        self._clear()
        self.answer = answer
        streamed = "".join(self._streamed)
        if streamed.strip():
            self._write("\n")
        if not answer.text.startswith(streamed):  # pragma: no cover - the pipeline streams only its final text
            self._write(answer.text + "\n")
        for line in format_citations(answer):
            self._write(line + "\n")
