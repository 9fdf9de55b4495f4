"""Background ingestion jobs: one worker thread runs them in order, with progress and cancellation;
every job is kept in the jobs database (server.jobstore), so a restart loses none.

Jobs run off the event loop through an ingest callable (AppState.run_ingest: the KB's store and a
second embedder instance), so queries keep being answered while a job embeds. One job at a time:
ingestion is CPU-bound and two jobs on one knowledge base must not interleave.

Restarts. On shutdown (SIGTERM) the manager takes no more work: the running job stops after the
document in hand (documents already written stay), it and the queued jobs are marked `interrupted`
(a job submitted during the shutdown too), and the worker exits. A manager that starts takes over the
jobs a stopped server left `interrupted`, and those a dead one (SIGKILL, crash) left `queued` or
`running` (marked `interrupted` first), and runs them again from the start under the same id: the
pipeline skips content already stored (content hashes), so the rerun writes only what is missing.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import Cancelled, CiteqaError, JobNotFound
from server.jobprogress import initial_progress, jsonable, progress_to_dict, share_done
from server.jobstore import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    LIVE_OWNERS,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobStore,
    new_owner,
    owner_is_gone,
)

if TYPE_CHECKING:
    from ingest.pipeline import IngestSummary
    from server.metrics import Metrics

log = logging.getLogger("citeqa.jobs")

__all__ = ["CANCELLED", "FAILED", "INTERRUPTED", "QUEUED", "RUNNING", "SUCCEEDED", "Job", "JobManager"]

PERSIST_EVERY_S = 1.0  # progress is written at most this often (state changes at once)
TICK_S = 30.0  # heartbeat of held jobs, expiry, takeover of jobs whose server died
STALE_S = 120.0  # another host's job not written for this long: its server is taken for dead
INGEST_NICENESS = 10


class IngestFn(Protocol):
    """What runs one job: ingest `paths` into `kb` (dropping document `replace` first, for a reingest)."""

    def __call__(
        self,
        kb: str,
        paths: list[Path],
        *,
        replace: str | None,
        password: str | None,
        on_progress: Callable[[Any], None],
        cancel: threading.Event,
    ) -> IngestSummary: ...


def _lower_thread_priority() -> None:
    """Queries first: on Linux a thread has its own nice value, so only ingestion yields the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: ingestion runs at normal priority
        log.debug("could not lower the ingestion thread's priority")


class JobManager:
    """The ingestion jobs of one app: a queue run by one worker thread, kept in a JobStore.

    `ingest` runs one job; `redact` takes server folders out of texts clients see; finished jobs are
    forgotten `keep_days` after they ended (checked at start and every `tick_s`).
    """

    def __init__(
        self,
        ingest: IngestFn,
        store: JobStore,
        *,
        metrics: Metrics,
        redact: Callable[[str], str] = lambda text: text,
        keep_days: float = 7.0,
        tick_s: float = TICK_S,
        stale_s: float = STALE_S,
    ) -> None:
        self._ingest = ingest
        self._store = store
        self.metrics = metrics
        self._redact = redact
        self.keep_days = keep_days
        self.tick_s = tick_s
        self.stale_s = stale_s
        self.owner = new_owner()
        self._live: dict[str, Job] = {}  # jobs this process holds and has not finished
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closing = False
        self._stop = threading.Event()
        self.expire()
        self.recover()
        self._worker = threading.Thread(target=self._run, name="citeqa-ingest", daemon=True)
        self._worker.start()
        self._ticker = threading.Thread(target=self._tick, name="citeqa-jobs-tick", daemon=True)
        self._ticker.start()

    # --- API -------------------------------------------------------------------------------------
    def submit(
        self,
        kb: str,
        paths: list[Path],
        *,
        kind: str = "ingest",
        doc_id: str | None = None,
        password: str | None = None,
    ) -> Job:
        """Queue an ingestion of `paths` into `kb` (`password` opens encrypted PDFs of this job only).

        During a shutdown the job is recorded `interrupted`, so the next start runs it: files already
        uploaded are never left behind un-ingested.
        """
        job = Job(id=uuid.uuid4().hex[:12], kb=kb, paths=[str(p) for p in paths], kind=kind, doc_id=doc_id)
        job.password = password
        job.progress = initial_progress(len(paths))
        with self._lock:
            closing = self._closing
            if closing:
                job.state = INTERRUPTED
            else:
                self._live[job.id] = job
            job.seq = self._save(job)
        if not closing:
            self._queue.put(job)
        self._update_gauges()
        log.info(
            "job %s %s",
            job.id,
            job.state,
            extra={"fields": {"event": "job_queued", "job": job.id, "kb": kb, "files": len(paths)}},
        )
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._live.get(job_id)
        if job is not None:
            return job
        row = self._store.get(job_id)
        if row is None:
            raise JobNotFound(
                f"no ingestion job {job_id!r} (finished jobs are kept for {self.keep_days:g} days: server.jobs_keep_days)"
            )
        return Job.from_row(row)

    def list(
        self,
        kb: str | None = None,
        *,
        kbs: Collection[str] | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """One page of jobs, newest first, and how many match in all (`kbs`: only these knowledge bases)."""
        rows, total = self._store.page(kb=kb, kbs=kbs, state=state, limit=limit, offset=offset)
        with self._lock:
            live = dict(self._live)
        return [live.get(row["id"]) or Job.from_row(row) for row in rows], total

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued (or interrupted) job never starts; a running one stops between files."""
        job = self.get(job_id)
        if job.state in FINISHED:
            return job
        job.cancel_requested = True
        job.cancel_event.set()
        with self._lock:
            held = job.id in self._live
        if job.state == INTERRUPTED or (held and job.state == QUEUED):
            self._finish(job, CANCELLED)
        elif held:  # running here: it stops between documents; recorded in case this server dies first
            self._save(job)
        else:  # another server sharing this home runs it: recorded, honoured if it is ever resumed
            self._store.request_cancel(job.id)
        return job

    def cancel_kb(self, kb: str) -> None:
        with self._lock:
            jobs = [j for j in self._live.values() if j.kb == kb]
        for job in jobs:
            self.cancel(job.id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job finishes or `timeout` passes (used by tests and the bench)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.05)
            job = self.get(job_id)
        return job

    def expire(self) -> int:
        """Forget the finished jobs older than `keep_days`; returns how many."""
        n = self._store.expire(time.time() - self.keep_days * 86400)
        if n:
            log.info("%d finished ingestion jobs expired", n, extra={"fields": {"event": "jobs_expired", "n": n}})
        return n

    def recover(self) -> list[Job]:
        """Take over the jobs that a stopped or dead server left unfinished, and queue them again."""
        resumed = []
        for row in self._store.unfinished():
            if row["id"] in self._live:
                continue
            was, owner = row["state"], row["owner"]
            if was != INTERRUPTED and not owner_is_gone(owner, row["updated_at"], stale_s=self.stale_s):
                continue  # a live server is running it
            if not self._store.claim(row["id"], state=was, owner=owner, to=self.owner):
                continue  # another server took it first
            job = Job.from_row(row)
            if was != INTERRUPTED:
                log.warning("job %s was %s when its server died: interrupted", job.id, was)
                job.state = INTERRUPTED
                self._save(job)
            if job.cancel_requested:  # its owner had asked it to stop: it stays stopped
                self._finish(job, CANCELLED)
                continue
            job.state, job.resumed, job.started_at, job.summary, job.error = QUEUED, job.resumed + 1, None, None, None
            job.files_failed, job.progress = 0, initial_progress(len(job.paths))
            with self._lock:
                self._live[job.id] = job
                self._save(job)
            self._queue.put(job)
            resumed.append(job)
            log.info(
                "job %s resumed",
                job.id,
                extra={"fields": {"event": "job_resumed", "job": job.id, "kb": job.kb, "resumed": job.resumed}},
            )
        self._update_gauges()
        return resumed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking work, let the running job stop after the document in hand, mark the rest interrupted."""
        with self._lock:
            self._closing = True
            live = list(self._live.values())
        self._stop.set()
        for job in live:
            job.cancel_event.set()  # not cancel_requested: the job is interrupted, to be resumed
        self._queue.put(None)
        self._worker.join(timeout)
        with self._lock:
            left = [j for j in self._live.values() if j.state in (QUEUED, RUNNING)]
        for job in left:  # queued ones, and a running one whose file did not finish in time
            self._finish(job, INTERRUPTED)
        self._ticker.join(1.0)
        LIVE_OWNERS.discard(self.owner)
        if not self._worker.is_alive():
            self._store.close()

    # --- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.state != QUEUED or self._closing:  # cancelled while waiting, or shutting down
                continue
            self._execute(job)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                with self._lock:
                    held = list(self._live)
                self._store.touch(held, self.owner)
                self.expire()
                self.recover()
            except sqlite3.Error:  # a busy database: try again at the next tick
                log.warning("jobs upkeep failed", exc_info=True)

    def _execute(self, job: Job) -> None:
        job.state = RUNNING
        job.started_at = time.time()
        self._save(job)
        self._update_gauges()
        metrics = self.metrics
        metrics.ingest_files_total.set(len(job.paths))
        metrics.ingest_files_done.set(0)
        metrics.ingest_progress.set(0)
        saved_at = [time.monotonic()]

        def on_progress(progress: Any) -> None:
            data = progress_to_dict(progress)
            if isinstance(data.get("current"), str):
                data["current"] = self._public(job, data["current"])
            ratio = share_done(data)
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
            if time.monotonic() - saved_at[0] >= PERSIST_EVERY_S:
                saved_at[0] = time.monotonic()
                try:
                    self._save(job)
                except sqlite3.Error:  # a busy jobs database must not fail the ingestion: saved at the end
                    log.warning("job %s: progress not saved", job.id, exc_info=True)

        try:
            summary = self._ingest(
                job.kb,
                [Path(p) for p in job.paths],
                replace=job.doc_id,
                password=job.password,
                on_progress=on_progress,
                cancel=job.cancel_event,
            )
            job.summary = self._public_summary(job, jsonable(summary.to_json()))
            job.files_failed = len(summary.failed)
            metrics.ingest_chunks.inc(int(job.summary.get("chunks", 0) or 0))
            if job.cancel_event.is_set():
                self._finish(job, CANCELLED if job.cancel_requested else INTERRUPTED)
            elif summary.failed and not (summary.added or summary.updated or summary.skipped or summary.deduplicated):
                # Nothing ingested: the job failed (a job with some failures succeeds and counts them).
                n, first = len(summary.failed), job.summary["failed"][0]["error"]
                job.error = first if n == 1 else f"all {n} files failed; the first: {first}"
                self._finish(job, FAILED)
            else:
                self._finish(job, SUCCEEDED)
        except Cancelled as exc:
            if job.cancel_requested:
                job.error = self._public(job, str(exc)) or "cancelled"
            self._finish(job, CANCELLED if job.cancel_requested else INTERRUPTED)
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
        return self._redact(text)

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

    def _save(self, job: Job) -> int:
        return self._store.save(job.row(self.owner))

    def _finish(self, job: Job, state: str) -> None:
        """End the job here: finished (succeeded, failed, cancelled) or interrupted (to be resumed)."""
        job.state = state
        if state in FINISHED:
            job.finished_at = time.time()
        if state == SUCCEEDED or (state == FAILED and job.summary is not None):  # every file was processed
            job.progress = {**job.progress, "ratio": 1.0}
        self._save(job)
        with self._lock:
            self._live.pop(job.id, None)
        self.metrics.jobs.labels(state).inc()
        if state == SUCCEEDED:
            self.metrics.ingest_progress.set(1.0)
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
        with self._lock:
            jobs = list(self._live.values())
        self.metrics.jobs_running.set(sum(1 for j in jobs if j.state == RUNNING))
        self.metrics.jobs_queued.set(sum(1 for j in jobs if j.state == QUEUED))
