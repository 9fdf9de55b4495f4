"""Background ingestion jobs: one worker thread runs them in order, with progress and cancellation.

Jobs run off the event loop and use their own embedder instance (AppState.ingest_embedder), so
queries keep being answered while a job embeds. One job at a time: ingestion is CPU-bound and two
jobs on one knowledge base must not interleave.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import Cancelled, CiteqaError

if TYPE_CHECKING:
    from server.state import AppState

log = logging.getLogger("citeqa.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = {SUCCEEDED, FAILED, CANCELLED}


class JobNotFound(CiteqaError):
    """No job with that id (finished jobs are kept for a while, then forgotten)."""


@dataclass
class Job:
    """One ingestion job and what is known about it so far."""

    id: str
    kb: str
    paths: list[str]
    kind: str = "ingest"  # "ingest" | "reingest"
    state: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    before: Callable[[], None] | None = field(default=None, repr=False)  # e.g. drop the old version first
    password: str | None = field(default=None, repr=False)  # for encrypted PDFs; never reported
    seq: int = 0
    files_failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kb": self.kb,
            "kind": self.kind,
            "state": self.state,
            "files": [Path(p).name for p in self.paths],
            "files_failed": self.files_failed,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": self.progress,
            "summary": self.summary,
            "error": self.error,
            "cancel_requested": self.cancel_event.is_set(),
        }


def progress_to_dict(progress: Any) -> dict[str, Any]:
    """Whatever the pipeline reports (a dataclass or an object) as plain JSON values."""
    if dataclasses.is_dataclass(progress) and not isinstance(progress, type):
        raw = dataclasses.asdict(progress)
    elif isinstance(progress, dict):
        raw = dict(progress)
    else:
        raw = {k: v for k, v in vars(progress).items() if not k.startswith("_")}
    return {k: _jsonable(v) for k, v in raw.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ratio(progress: dict[str, Any]) -> float | None:
    """The share of a job done (0..1), moving inside a file too, not only when a file finishes.

    Files that need no parsing (unchanged, duplicates) are done at scan time; for the files being
    parsed and embedded, the share of their chunks done is `chunks / (chunks + left)`, where the
    pipeline's chunks still expected are `eta_s * chunks_per_s` (its ETA is chunks left over rate).
    """
    done, total = _number(progress.get("files_done")), _number(progress.get("files_total"))
    if done is None or total is None or total <= 0:
        return None
    ratio = done / total
    chunks, rate, eta = (_number(progress.get(k)) for k in ("chunks", "chunks_per_s", "eta_s"))
    to_parse = _number(progress.get("to_parse"))
    if chunks is not None and rate and eta is not None and to_parse:
        left = max(0.0, eta * rate)
        share = chunks / (chunks + left) if chunks + left > 0 else 0.0
        ratio = max(ratio, (total - to_parse + to_parse * share) / total)
    return min(1.0, ratio)


INGEST_NICENESS = 10


def _lower_thread_priority() -> None:
    """Queries first: on Linux a thread has its own nice value, so only ingestion yields the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: ingestion runs at normal priority
        log.debug("could not lower the ingestion thread's priority")


class JobManager:
    """Queue of ingestion jobs for one app; finished jobs are kept (the newest `keep`)."""

    def __init__(self, state: AppState, keep: int = 500) -> None:
        self.state = state
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._worker = threading.Thread(target=self._run, name="citeqa-ingest", daemon=True)
        self._worker.start()

    # --- API -------------------------------------------------------------------------------------
    def submit(
        self,
        kb: str,
        paths: list[Path],
        *,
        kind: str = "ingest",
        before: Callable[[], None] | None = None,
        password: str | None = None,
    ) -> Job:
        """Queue an ingestion of `paths` into `kb` (`password` opens encrypted PDFs of this job only)."""
        job = Job(
            id=uuid.uuid4().hex[:12], kb=kb, paths=[str(p) for p in paths], kind=kind, before=before, password=password
        )
        job.progress = {"files_total": len(paths), "files_done": 0, "ratio": 0.0}
        with self._lock:
            job.seq = next(self._seq)
            self._jobs[job.id] = job
            self._trim()
        self._queue.put(job)
        self._update_gauges()
        log.info(
            "job %s queued",
            job.id,
            extra={"fields": {"event": "job_queued", "job": job.id, "kb": kb, "files": len(paths)}},
        )
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no ingestion job {job_id!r} (finished jobs are kept for the last {self.keep})")
        return job

    def list(self, kb: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted((j for j in jobs if kb is None or j.kb == kb), key=lambda j: j.seq, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job never starts; a running one stops between files."""
        job = self.get(job_id)
        if job.state not in FINISHED:
            job.cancel_event.set()
            if job.state == QUEUED:
                self._finish(job, CANCELLED)
        return job

    def cancel_kb(self, kb: str) -> None:
        for job in self.list(kb):
            if job.state not in FINISHED:
                self.cancel(job.id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job finishes or `timeout` passes (used by tests and the bench)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def shutdown(self, timeout: float = 10.0) -> None:
        for job in self.list():
            if job.state not in FINISHED:
                job.cancel_event.set()
        self._queue.put(None)
        self._worker.join(timeout)

    # --- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.state != QUEUED:  # cancelled while waiting
                continue
            self._execute(job)

    def _execute(self, job: Job) -> None:
        from ingest.pipeline import ingest_paths

        job.state = RUNNING
        job.started_at = time.time()
        self._update_gauges()
        metrics = self.state.metrics
        metrics.ingest_files_total.set(len(job.paths))
        metrics.ingest_files_done.set(0)
        metrics.ingest_progress.set(0)

        def on_progress(progress: Any) -> None:
            data = progress_to_dict(progress)
            if isinstance(data.get("current"), str):
                data["current"] = self._public(job, data["current"])
            ratio = _ratio(data)
            if ratio is not None:
                # Never backwards (the chunk estimate may grow), and 1.0 only once the job has finished.
                previous = job.progress.get("ratio")
                ratio = min(0.999, max(ratio, previous if isinstance(previous, float) else 0.0))
                data["ratio"] = round(ratio, 4)
                metrics.ingest_progress.set(ratio)
            job.progress = data
            done = data.get("files_done")
            if isinstance(done, (int, float)):
                metrics.ingest_files_done.set(done)

        try:
            store = self.state.store(job.kb)
            embedder = self.state.ingest_embedder()
            if job.before is not None:
                job.before()
            summary = ingest_paths(
                [Path(p) for p in job.paths],
                store,
                embedder,
                self.state.settings,
                # One parser process unless configured: the server's cores also answer queries.
                workers=self.state.settings.ingest.workers or 1,
                on_progress=on_progress,
                cancel=job.cancel_event,
                password=job.password,
            )
            job.summary = self._public_summary(job, _jsonable(summary.to_json()))
            job.files_failed = len(summary.failed)
            metrics.ingest_chunks.inc(int(job.summary.get("chunks", 0) or 0))
            if job.cancel_event.is_set():
                self._finish(job, CANCELLED)
            elif summary.failed and not (summary.added or summary.updated or summary.skipped or summary.deduplicated):
                # Nothing ingested: the job failed (a job with some failures succeeds and counts them).
                n, first = len(summary.failed), job.summary["failed"][0]["error"]
                job.error = first if n == 1 else f"all {n} files failed; the first: {first}"
                self._finish(job, FAILED)
            else:
                self._finish(job, SUCCEEDED)
        except Cancelled as exc:
            job.error = self._public(job, str(exc)) or "cancelled"
            self._finish(job, CANCELLED)
        except CiteqaError as exc:
            job.error = self._public(job, f"{type(exc).__name__}: {exc}")
            self._finish(job, FAILED)
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            job.error = self._public(job, f"{type(exc).__name__}: {exc}")
            self._finish(job, FAILED)
        finally:
            job.password = None  # not kept in memory longer than the job needs it

    def _public(self, job: Job, text: str) -> str:
        """`text` naming the job's files by their names, not their server paths (nor any under CITEQA_HOME)."""
        for path in sorted(job.paths, key=len, reverse=True):
            name = Path(path).name
            for form in sorted({path, str(Path(path).resolve())}, key=len, reverse=True):
                text = text.replace(form, name)
        return self.state.redact(text)

    def _public_summary(self, job: Job, summary: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's summary with each failure's `path` and `error` naming the file, failures in the
        order the files were given (parallel parsers finish in any order; "the first" must be stable)."""
        order = {str(path): i for i, path in enumerate(job.paths)}
        failed = sorted(summary.get("failed", []), key=lambda f: order.get(str(f.get("path", "")), len(order)))
        summary["failed"] = [
            {"path": self._public(job, str(f.get("path", ""))), "error": self._public(job, str(f.get("error", "")))}
            for f in failed
        ]
        return summary

    def _finish(self, job: Job, state: str) -> None:
        job.state = state
        job.finished_at = time.time()
        if state == SUCCEEDED or (state == FAILED and job.summary is not None):  # every file was processed
            job.progress = {**job.progress, "ratio": 1.0}
        self.state.metrics.jobs.labels(state).inc()
        if state == SUCCEEDED:
            self.state.metrics.ingest_progress.set(1.0)
        self._update_gauges()
        log.info(
            "job %s %s",
            job.id,
            state,
            extra={
                "fields": {
                    "event": "job_finished",
                    "job": job.id,
                    "kb": job.kb,
                    "state": state,
                    "error": job.error,
                    "summary": job.summary,
                }
            },
        )

    def _update_gauges(self) -> None:
        jobs = self.list()
        self.state.metrics.jobs_running.set(sum(1 for j in jobs if j.state == RUNNING))
        self.state.metrics.jobs_queued.set(sum(1 for j in jobs if j.state == QUEUED))

    def _trim(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: j.seq)
        for job in finished[: max(0, len(self._jobs) - self.keep)]:
            self._jobs.pop(job.id, None)
