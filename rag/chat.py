"""`citeqa chat --kb NAME`: an offline terminal chat with streaming answers and verified citations.

Models are loaded once; each answer streams as it is generated, then its verified citations are
listed as `[n] doc · p.X · "quote"` and sentences no source supports are flagged. Follow-ups are
rewritten from the conversation. Commands: /sources, /kb NAME, /reset, /help, /quit. End of input
(Ctrl-D, or the end of a piped file) exits cleanly.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, TextIO

from rag.errors import CiteqaError
from rag.protocols import Embedder, Generator, Message, Store
from rag.records import Answer
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.pipeline import QAPipeline

HELP = """Commands:
  /sources     show the passages the last answer was given
  /kb NAME     switch to another knowledge base (clears the conversation)
  /reset       forget the conversation so far
  /help        this text
  /quit        leave (Ctrl-D works too)
Anything else is a question about the documents."""

QUOTE_CHARS = 200
HISTORY_TURNS = 6  # question/answer pairs kept for follow-up rewriting


def _one_line(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_citations(answer: Answer) -> list[str]:
    """The lines printed under an answer: citations, then flagged unsupported sentences."""
    lines = [f'[{c.n}] {c.doc} · p.{c.page} · "{_one_line(c.quote, QUOTE_CHARS)}"' for c in answer.citations if c.verified]
    lines += [f"[unsupported] {_one_line(s, QUOTE_CHARS)}" for s in answer.unsupported]
    return lines


class ChatSession:
    """The state of one terminal conversation: the open knowledge base, its pipeline and the history."""

    def __init__(self, settings: Settings, embedder: Embedder, generator: Generator, out: TextIO) -> None:
        self.settings = settings
        self.embedder = embedder
        self.generator = generator
        self.out = out
        self.history: list[Message] = []
        self.last: Answer | None = None
        self.kb_name = ""
        self.pipeline: QAPipeline | None = None
        self._store: Store | None = None

    def open(self, kb_name: str) -> None:
        from rag.kb import open_kb
        from rag.pipeline import QAPipeline

        store = open_kb(self.settings, kb_name, self.embedder)
        if self._store is not None:
            self._store.close()
        self._store = store
        self.pipeline = QAPipeline(store, self.embedder, self.generator, self.settings)
        self.kb_name = kb_name
        self.history.clear()
        self.last = None
        stats = store.stats()
        self.say(f"knowledge base '{kb_name}': {stats.get('documents', '?')} documents, {stats.get('chunks', '?')} chunks")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in {"quit", "exit", "q"}:
            return False
        if name == "help":
            self.say(HELP)
        elif name == "reset":
            self.history.clear()
            self.last = None
            self.say("conversation cleared")
        elif name == "sources":
            if self.last is None or not self.last.sources:
                self.say("no sources yet: ask a question first")
            for i, hit in enumerate(self.last.sources if self.last else [], start=1):
                chunk = hit.chunk
                self.say(f"[{i}] {chunk.doc or chunk.doc_id} · p.{chunk.page_start} · score {hit.score:.3f} · {_one_line(chunk.text, 160)}")
        elif name == "kb":
            if not arg:
                self.say(f"current knowledge base: {self.kb_name} (use /kb NAME to switch)")
            else:
                try:
                    self.open(arg)
                except CiteqaError as exc:
                    self.say(f"error: {exc}")
        else:
            self.say(f"unknown command /{name}; /help lists the commands")
        return True

    def ask(self, question: str) -> None:
        assert self.pipeline is not None, "open() a knowledge base first"
        streamed: list[str] = []
        answer: Answer | None = None
        try:
            for item in self.pipeline.ask_stream(question, self.history or None):
                if isinstance(item, Answer):
                    answer = item
                else:
                    streamed.append(item)
                    self.out.write(item)
                    self.out.flush()
        except CiteqaError as exc:
            self.say(f"\nerror: {exc}")
            return
        except KeyboardInterrupt:
            self.say("\n(interrupted)")
            return
        self.say()
        if answer is None:
            return
        if answer.text.strip() != "".join(streamed).strip():
            # markers were renumbered/removed, or nothing verified: show what the checks left standing
            self.say(f"verified answer: {answer.text}")
        for line in format_citations(answer):
            self.say(line)
        self.last = answer
        self.history += [{"role": "user", "content": answer.question or question}, {"role": "assistant", "content": answer.text}]
        self.history = self.history[-2 * HISTORY_TURNS :]


def run_chat(settings: Settings, kb_name: str, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Interactive chat over knowledge base `kb_name`; returns the process exit status."""
    from rag.embedders import make_embedder
    from rag.llm import make_generator

    try:
        embedder = make_embedder(settings.embedder)
        generator = make_generator(settings)
        session = ChatSession(settings, embedder, generator, stdout)
        session.open(kb_name)
    except CiteqaError as exc:
        stdout.write(f"error: {exc}\n")
        stdout.flush()
        return 1
    session.say(f"model {generator.id} · offline · /help for commands")
    try:
        while True:
            stdout.write("> ")
            stdout.flush()
            try:
                line = stdin.readline()
            except KeyboardInterrupt:
                break
            if not line:  # end of input
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            session.ask(line)
    finally:
        session.close()
        stdout.write("\n")
        stdout.flush()
    return 0
