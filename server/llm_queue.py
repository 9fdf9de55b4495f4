"""One model instance, many requests: a first-come-first-served queue in front of the generator.

`threading.Lock` does not promise FIFO order, so a busy server could starve an early request.
`FairLock` hands the model out by ticket; `QueuedGenerator` wraps any Generator with it and records
tokens/s for /metrics. Streams hold the model until they finish or are closed.

A request that ends (time limit, client gone) must not run the model afterwards: the thread working
for it runs inside `cancel_on(event)`, and once the event is set its model calls leave the queue
(or stop before the next piece) with `Cancelled` instead of generating for nobody.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Self

from rag.errors import Cancelled
from rag.protocols import Generator, Message

CANCEL_POLL_S = 0.05  # how often a waiting request looks at its cancel event
_cancel_event: ContextVar[threading.Event | None] = ContextVar("citeqa_llm_cancel", default=None)


@contextmanager
def cancel_on(event: threading.Event) -> Iterator[None]:
    """Model calls made in this context (this thread) give up once `event` is set."""
    token = _cancel_event.set(event)
    try:
        yield
    finally:
        _cancel_event.reset(token)


def _check_cancelled(event: threading.Event | None) -> None:
    if event is not None and event.is_set():
        raise Cancelled("the request ended (time limit or client gone) before the model was done for it")


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

    def acquire(self, timeout: float | None = None, cancel: threading.Event | None = None) -> bool:
        """Wait for our turn; False after `timeout` seconds or once `cancel` is set (the turn is given away)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ticket = next(self._tickets)
            self._waiting += 1
            try:
                while self._serving != ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or (cancel is not None and cancel.is_set()):
                        # Give our turn away so later tickets are not stuck behind an abandoned one.
                        self._abandoned.add(ticket)
                        return False
                    if cancel is not None:  # nobody notifies on a cancel: look again every poll
                        left = CANCEL_POLL_S if left is None else min(left, CANCEL_POLL_S)
                    self._cond.wait(timeout=left)
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

    def _acquire(self, cancel: threading.Event | None) -> None:
        _check_cancelled(cancel)
        if self._on_queue:
            self._on_queue(self.queue.waiting + 1)
        try:
            if not self.queue.acquire(cancel=cancel):
                _check_cancelled(cancel)
            elif cancel is not None and cancel.is_set():  # our turn came with the cancel: pass it on
                self.queue.release()
                _check_cancelled(cancel)
        finally:
            if self._on_queue:
                self._on_queue(self.queue.waiting)

    def generate(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_tokens: int | None = None,  # None: the wrapped model's own defaults (settings llm.*)
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str | Iterator[str]:
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        if stream:
            return self._stream(messages, kwargs)
        self._acquire(_cancel_event.get())
        try:
            start = time.perf_counter()
            text = self.inner.generate(messages, stream=False, **kwargs)
            assert isinstance(text, str)
            self._report(self._count(text), time.perf_counter() - start)
            return text
        finally:
            self.queue.release()

    def _stream(self, messages: list[Message], kwargs: dict[str, Any]) -> Iterator[str]:
        cancel = _cancel_event.get()  # read on the first next(), in the thread that iterates
        self._acquire(cancel)
        pieces = 0
        start = time.perf_counter()
        try:
            stream = self.inner.generate(messages, stream=True, **kwargs)
            assert not isinstance(stream, str)
            try:
                for piece in stream:
                    _check_cancelled(cancel)  # before handing on a piece nobody waits for
                    pieces += 1
                    yield piece
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stops llama.cpp's token loop now, not at the next garbage collection
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
