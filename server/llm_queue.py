"""One model instance, many requests: a first-come-first-served queue in front of the generator.

`threading.Lock` does not promise FIFO order, so a busy server could starve an early request.
`FairLock` hands the model out by ticket; `QueuedGenerator` wraps any Generator with it and records
tokens/s for /metrics. Streams hold the model until they finish or are closed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from rag.protocols import Generator, Message


class FairLock:
    """A FIFO lock. It may be released by another thread than the one that acquired it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0
        self._waiting = 0
        self._abandoned: set[int] = set()

    @property
    def waiting(self) -> int:
        """Requests queued behind the current holder."""
        return self._waiting

    def acquire(self, timeout: float | None = None) -> bool:
        with self._cond:
            ticket = next(self._tickets)
            self._waiting += 1
            try:
                ok = self._cond.wait_for(lambda: self._serving == ticket, timeout=timeout)
                if not ok:
                    # Give our turn away so later tickets are not stuck behind an abandoned one.
                    self._abandoned.add(ticket)
                    return False
                return True
            finally:
                self._waiting -= 1

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
            self._cond.notify_all()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class QueuedGenerator:
    """A Generator whose calls wait their turn in a FairLock and report tokens/s.

    `on_generation(tokens, seconds)` is called after each finished generation (for metrics).
    """

    def __init__(
        self,
        inner: Generator,
        lock: FairLock | None = None,
        on_generation: Callable[[int, float], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = inner
        self.queue = lock or FairLock()
        self.id: str = inner.id
        self.context_tokens: int = inner.context_tokens
        self._on_generation = on_generation
        self._on_queue = on_queue

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def __getattr__(self, name: str) -> Any:  # other backend attributes (path, ...) pass through
        return getattr(self.inner, name)

    def _acquire(self) -> None:
        if self._on_queue:
            self._on_queue(self.queue.waiting + 1)
        self.queue.acquire()
        if self._on_queue:
            self._on_queue(self.queue.waiting)

    def generate(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_tokens: int = 384,
        temperature: float = 0.1,
        stop: list[str] | None = None,
    ) -> str | Iterator[str]:
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        if stream:
            return self._stream(messages, kwargs)
        self._acquire()
        try:
            start = time.perf_counter()
            text = self.inner.generate(messages, stream=False, **kwargs)
            assert isinstance(text, str)
            self._report(self._count(text), time.perf_counter() - start)
            return text
        finally:
            self.queue.release()

    def _stream(self, messages: list[Message], kwargs: dict[str, Any]) -> Iterator[str]:
        self._acquire()
        pieces = 0
        start = time.perf_counter()
        try:
            stream = self.inner.generate(messages, stream=True, **kwargs)
            assert not isinstance(stream, str)
            for piece in stream:
                pieces += 1
                yield piece
        finally:
            self.queue.release()
            self._report(pieces, time.perf_counter() - start)

    def _count(self, text: str) -> int:
        try:
            return self.inner.count_tokens(text)
        except (AttributeError, ValueError, RuntimeError):
            return max(1, len(text) // 4)

    def _report(self, tokens: int, seconds: float) -> None:
        if self._on_generation and tokens:
            self._on_generation(tokens, seconds)
