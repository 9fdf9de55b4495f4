"""The embedding phase: chunks stored without vectors get them from the store's own queue.

`ingest_paths` writes each document with its chunks and keyword index as soon as it is parsed
(`Store.add_document(..., vectors=None)`), so it is searchable by keyword within seconds; the texts to
embed wait in the store (`Store.pending_embeddings`), which survives kill -9 and restarts. This module
empties that queue: oldest first, one embedder batch at a time, each batch stored in one transaction
(`Store.add_embeddings`). A batch lost to a kill is simply embedded again by the next run.

One process embeds a knowledge base's queue at a time: the others would embed the same oldest texts
twice. `QueueLock` is an advisory lock file under the citeqa home (`.locks/`), so it covers the
processes of one machine; two machines on a shared pgvector KB may both embed (the results are
identical and the second write is ignored, so only time is lost).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from rag.protocols import Embedder, Store
from rag.settings import Settings

LOCK_POLL_S = 1.0  # how often a process waiting for another one's embedding checks again


def defers_embedding(store: Store) -> bool:
    """Whether `store` takes documents before their vectors (a plugin store without the flag does not)."""
    return bool(getattr(store, "defers_embedding", False))


def lock_path(settings: Settings, kb: str) -> Path:
    """The lock file of one KB's queue: per backend and URL, since the same name may live on several."""
    where = f"{settings.store.backend}\0{settings.store.url or ''}\0{kb}"
    digest = hashlib.sha1(where.encode("utf-8")).hexdigest()[:16]
    return Path(settings.paths.home).expanduser() / ".locks" / f"embed-{digest}.lock"


class QueueLock:
    """`with QueueLock(path) as lock:` — `lock.held` says whether this process may embed now.

    `wait(cancel, on_wait)` blocks until the lock is free (another process finished or died: the
    kernel drops a dead holder's lock), calling `on_wait` every LOCK_POLL_S so progress keeps moving."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.try_acquire()
        return self

    def try_acquire(self) -> bool:
        if not self.held and self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                os.ftruncate(self._fd, 0)
                os.write(self._fd, f"{os.getpid()}\n".encode())
            except BlockingIOError:
                pass
        return self.held

    def wait(self, cancel: threading.Event, on_wait: Callable[[], None]) -> bool:
        """Block until held (True) or cancelled (False)."""
        while not self.try_acquire():
            if cancel.wait(LOCK_POLL_S):
                return False
            on_wait()
        return True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        self.held = False


def embed_batch(store: Store, embedder: Embedder, batch: int) -> tuple[int, float, float]:
    """Embed and store the oldest `batch` queued texts: (texts taken, embed seconds, store seconds).

    0 texts taken means the queue is empty."""
    items = store.pending_embeddings(batch)
    if not items:
        return 0, 0.0, 0.0
    t = time.perf_counter()
    vectors = embedder.embed_documents([text for _, text in items])
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    store.add_embeddings([key for key, _ in items], vectors)
    return len(items), embed_s, time.perf_counter() - t
