"""`citeqa chat --kb NAME`: an offline terminal chat with streaming answers and verified citations.

Models are loaded once; what retrieval found is shown at once, then the answer streams as it is
generated, then its verified citations are listed as `[n] doc · p.X · "quote"` and sentences no
source supports are flagged (rag.display). Follow-ups are
rewritten from the conversation. Commands: /sources, /kb NAME, /reset, /help, /quit. End of input
(Ctrl-D, or the end of a piped file) exits cleanly.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from rag.display import AnswerPrinter, format_citations, one_line
from rag.errors import CiteqaError
from rag.protocols import Embedder, Generator, Message, Store
from rag.records import Answer
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.pipeline import QAPipeline

HELP = """Commands:
  /sources     show the numbered passages the last answer was given ([n] as it cites them)
  /kb NAME     switch to another knowledge base (clears the conversation)
  /reset       forget the conversation so far
  /help        this text
  /quit        leave (Ctrl-D works too)
Anything else is a question about the documents."""

__all__ = ["ChatSession", "format_citations", "run_chat"]

HISTORY_TURNS = 6  # question/answer pairs kept for follow-up rewriting


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
        self.say(
            f"knowledge base '{kb_name}': {stats.get('documents', '?')} documents, {stats.get('chunks', '?')} chunks"
        )

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
            units = [u for u in self.last.units if u.n > 0] if self.last is not None else []
            if not units:
                self.say("no sources yet: ask a question first")
            for u in units:  # numbered as the answer cites them
                self.say(f"[{u.n}] {u.doc} · p.{u.page} · score {u.score:.3f} · {one_line(u.text, 160)}")
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
        printer = AnswerPrinter(self.out)
        try:
            for item in self.pipeline.ask_stream(question, self.history or None, events=True):
                printer.feed(item)
        except CiteqaError as exc:
            self.say(f"\nerror: {exc}")
            return
        except KeyboardInterrupt:
            self.say("\n(interrupted)")
            return
        answer = printer.answer
        if answer is None:
            return
        self.last = answer
        self.history += [
            {"role": "user", "content": answer.question or question},
            {"role": "assistant", "content": answer.text},
        ]
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
