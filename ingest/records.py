"""The records of an ingest run: what callers see (`IngestProgress`, `IngestSummary`), what moves
between its stages (`ParseTask` -> worker -> `Ready` -> store), and the `Tally` every stage reports to."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.discover import Found
from rag.display import one_line as display_one_line
from rag.records import Chunk, ParsedDocument


# ---------------------------------------------------------------------- public records
@dataclass(slots=True)
class IngestProgress:
    """A snapshot handed to `on_progress` (at most a few times a second, and after every file)."""

    files_total: int  # files found (after discovery)
    files_done: int  # files finished: written, skipped or failed
    pages: int  # pages parsed so far
    chunks: int  # chunks embedded-or-reused so far (this run)
    chunks_per_s: float
    eta_s: float | None  # seconds left (None until there is a rate to go on)
    elapsed_s: float
    phase: str  # "scanning" | "ingesting" | "pruning" | "embedding" | "done"
    current: str = ""  # the file most recently finished
    added: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    to_parse: int = 0  # files that need parsing in this run
    # The knowledge base's "embedded x of y" (chunks with a vector / all chunks), reported from the
    # embedding phase on; in that phase `chunks`, `chunks_per_s` and `eta_s` follow the embedding.
    embedded: int = 0
    chunks_total: int = 0
    embedding_follows: bool = False  # files are written first and an embedding phase follows in this run


@dataclass(slots=True)
class IngestSummary:
    """What a run did. Lists hold file paths; `failed` holds (path, one-line error)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unchanged, not parsed
    deduplicated: list[str] = field(default_factory=list)  # same content as a stored document: path recorded
    failed: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # paths whose documents (or path records) were removed
    chunks: int = 0  # chunks written in this run
    pages: int = 0  # pages parsed in this run
    embedded: int = 0  # chunk texts embedded (the rest came from the vector cache)
    pending: int = 0  # chunks of the KB still waiting for a vector when the run returned (keyword-searchable)
    stored_s: float = 0.0  # seconds until every document of the run was written (searchable by keyword)
    reused: int = 0  # chunk vectors reused from the store's cache
    seconds: float = 0.0
    cancelled: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # hash, parse (worker time), chunk, embed, index, wait

    def to_json(self) -> dict[str, Any]:
        """The CLI/REST shape: counts for added/updated/skipped (dedup included), failures spelled out."""
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "skipped": len(self.skipped) + len(self.deduplicated),
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "deduplicated": len(self.deduplicated),
            "pruned": len(self.pruned),
            "pages": self.pages,
            "embedded": self.embedded,
            "reused": self.reused,
            "pending": self.pending,
            "stored_s": round(self.stored_s, 3),
            "cancelled": self.cancelled,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


ProgressCallback = Callable[[IngestProgress], None]


def one_line(text: str) -> str:
    """A failure as one summary line (whitespace collapsed, at most 500 characters, ASCII cut mark)."""
    return display_one_line(text, 500, "...")


# ---------------------------------------------------------------------- between the stages
@dataclass(slots=True, eq=False)  # compared and hashed by identity
class ParseTask:
    """A file that must be parsed in this run."""

    found: Found
    sha: str
    status: str  # "added" | "updated"
    replaces: str | None = None
    also: list[str] = field(default_factory=list)  # more paths with the same content (this batch)


@dataclass(slots=True)
class Ready:
    """A parsed, chunked document waiting for its missing vectors."""

    task: ParseTask
    doc: ParsedDocument
    chunks: list[Chunk]
    vectors: np.ndarray | None  # None: written without vectors (the store queues them)
    missing: deque[int]  # chunk indexes still to embed
    hashes: list[str]


class Tally:
    """A run's bookkeeping: the summary being built, the counters behind progress and its ETA."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.summary = IngestSummary()
        self.t = {"hash": 0.0, "parse": 0.0, "chunk": 0.0, "embed": 0.0, "index": 0.0, "wait": 0.0}
        self.t0 = time.perf_counter()
        self.files_total = 0
        self.files_done = 0
        self.current = ""
        self.chunks_done = 0
        self.bytes_to_parse = 0
        self.chunk_bytes_seen = 0  # bytes of files whose chunk count is known
        self.chunks_known = 0
        self._sized: set[ParseTask] = set()  # tasks whose bytes count in chunk_bytes_seen
        self.to_parse = 0
        self.work_t0: float | None = None
        self._last_progress = 0.0
        # The embedding phase: the KB's counts now, and where they and the clock stood when it began.
        self.kb_embedded = self.kb_chunks = 0
        self.embed_t0: float | None = None
        self.embed_base = 0
        self.embedding_follows = False

    def done(self, path: str, n: int = 1) -> None:
        """`n` files finished, the last of them `path`."""
        self.files_done += n
        self.current = path

    def fail(self, path: str, error: str) -> None:
        self.summary.failed.append((path, one_line(error)))
        self.done(path)

    def sized(self, task: ParseTask, chunks: int) -> None:
        """`task` was chunked into `chunks`: the ETA's chunks-per-byte learns from it."""
        self.chunks_known += chunks
        self.chunk_bytes_seen += task.found.size
        self._sized.add(task)

    def fail_task(self, task: ParseTask, error: str) -> None:
        """A file failed; copies of the same content in this batch fail with it."""
        if task not in self._sized:
            # Its bytes will never turn into chunks: left in, they would make the ETA expect hours of
            # work for a 50 MB file that failed at once.
            self.bytes_to_parse = max(0, self.bytes_to_parse - task.found.size)
        self.fail(task.found.key, error)
        for path in task.also:
            self.fail(path, f"{path}: same content as {task.found.key}, which failed: {one_line(error)}")

    def embedding_counts(self, embedded: int, chunks: int) -> None:
        """The KB's (chunks with a vector, all chunks); the first call starts the embedding phase's clock."""
        if self.embed_t0 is None:
            self.embed_t0, self.embed_base = time.perf_counter(), embedded
        self.kb_embedded, self.kb_chunks = embedded, chunks

    def progress(self, phase: str, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_progress < 0.25:
            return
        self._last_progress = now
        s = self.summary
        done = self.chunks_done
        work_s = now - self.work_t0 if self.work_t0 is not None else 0.0
        if phase == "embedding" and self.embed_t0 is not None:
            done, work_s = self.kb_embedded - self.embed_base, now - self.embed_t0
        rate = done / work_s if work_s > 0.5 and done > 0 else 0.0
        eta: float | None = None
        if phase == "done":
            eta = 0.0
        elif phase == "embedding":
            eta = (self.kb_chunks - self.kb_embedded) / rate if rate > 0 else None
        elif rate > 0 and self.chunk_bytes_seen:
            # Chunks still expected: those of parsed files not yet embedded, plus unparsed bytes at the
            # chunks-per-byte seen so far.
            per_byte = self.chunks_known / self.chunk_bytes_seen
            expected = self.chunks_known + per_byte * max(0, self.bytes_to_parse - self.chunk_bytes_seen)
            eta = max(0.0, expected - self.chunks_done) / rate
        self.on_progress(
            IngestProgress(
                files_total=self.files_total,
                files_done=self.files_done,
                pages=s.pages,
                chunks=done,
                chunks_per_s=rate,
                eta_s=eta,
                elapsed_s=now - self.t0,
                phase=phase,
                current=self.current,
                added=len(s.added),
                updated=len(s.updated),
                skipped=len(s.skipped) + len(s.deduplicated),
                failed=len(s.failed),
                to_parse=self.to_parse,
                embedded=self.kb_embedded,
                chunks_total=self.kb_chunks,
                embedding_follows=self.embedding_follows,
            )
        )
