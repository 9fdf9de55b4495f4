"""Bulk and incremental ingestion: files or folders -> parsed -> chunked -> embedded -> one store write each.

    summary = ingest_paths([Path("reports")], store, embedder, settings, on_progress=renderer.update)

How a run goes:
1. **Discover** files (ingest.discover) and **classify** each by the sha256 of its bytes (streamed):
   content already stored at this path -> *skipped* without parsing; content already stored under
   another path, or twice in this batch -> the path is recorded on the stored document (*skipped*,
   counted as deduplicated; stored once); a known path with new content -> *updated* (parsed and
   written with `replaces=` the old id, atomically); anything else -> *added*.
2. **Parse** in worker processes (`workers`, default settings.ingest.workers; 0 = one per core, at
   most 4). At most `workers + 1` files are in flight, and new parses wait while more than a few
   embedding batches of chunks are already queued, so memory stays bounded on any corpus. A parser
   error is that file's one-line failure; a worker that dies (segfault, OOM kill) fails only the file
   it was on: the files that were in flight with it are retried one at a time in a fresh pool.
3. **Chunk** (rag.chunking) and **embed** on this process, in batches of settings.embedder.batch_size
   texts that span documents, while the workers keep parsing the next files. Vectors already in the
   store for the same chunk text (sha256) are reused, so re-chunking or re-ingesting an edited
   document only embeds new text.
4. **Write** each document with one `store.add_document` call (one transaction): a kill at any
   moment leaves every document either fully stored or absent, and rerunning the same command
   resumes with exactly the chunks a clean run gives (document and chunk ids derive from content).
5. **Prune** (`prune=True`, after the writes): documents whose files under the given folders are gone
   are removed (a document that still has another path only loses the missing one).

`cancel` (a threading.Event) is checked between documents and between embedding batches: documents
already written stay, the rest are left for the next run, and the summary says `cancelled`.

Workers start with multiprocessing's "forkserver" method (no fork of a process that may be running
threads, e.g. a server), so as with any multiprocessing code a *script* that calls `ingest_paths`
must guard its entry point with `if __name__ == "__main__":` (the `citeqa` command, the server,
`python -c` and pytest all do).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.discover import Found, discover, folder_roots, is_under, sha256_file
from rag.chunking import make_chunker
from rag.errors import CiteqaError, DocumentNotFound, ParseError
from rag.protocols import Embedder, Store
from rag.records import Chunk, DocumentInfo, ParsedDocument
from rag.settings import IngestSettings, Settings


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
    phase: str  # "scanning" | "ingesting" | "pruning" | "done"
    current: str = ""  # the file most recently finished
    added: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    to_parse: int = 0  # files that need parsing in this run


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
            "cancelled": self.cancelled,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


ProgressCallback = Callable[[IngestProgress], None]


# ---------------------------------------------------------------------- worker side
def _parse_job(path: str, ingest: IngestSettings, password: str | None) -> tuple[bool, Any, float]:
    """Runs in a worker process: (True, ParsedDocument, seconds) or (False, one-line error, seconds).

    Errors travel back as text: an exception object that cannot be unpickled would break the pool.
    """
    from ingest.parsers import parse_file

    t0 = time.perf_counter()
    try:
        doc = parse_file(Path(path), ingest, password=password)
    except CiteqaError as exc:
        return False, _one_line(str(exc)), time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - reported as that file's typed ParseError line, batch continues
        err = ParseError(path, f"unexpected {type(exc).__name__}: {exc}")
        return False, _one_line(str(err)), time.perf_counter() - t0
    return True, doc, time.perf_counter() - t0


def _worker_init(owner_pid: int) -> None:
    # Workers parse; the main process embeds with every core. OCR's onnxruntime must not fan out.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        os.nice(5)
    except OSError:  # pragma: no cover - not permitted on some systems
        pass
    # A pool worker waits on a queue whose write end it also holds, so it never sees its owner die:
    # when the ingest process is killed (kill -9, OOM), exit instead of idling forever.
    threading.Thread(target=_exit_when_gone, args=(owner_pid,), daemon=True, name="owner-watchdog").start()


def _exit_when_gone(owner_pid: int, interval_s: float = 1.0) -> None:
    while True:
        time.sleep(interval_s)
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # pragma: no cover - the pid was reused by another user's process
            os._exit(0)


def _make_executor(workers: int) -> Executor:
    """The parser pool. forkserver: cheap workers without forking a process that runs threads."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["ingest.parsers"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))


# The pool factory, replaceable in tests (e.g. by a thread pool to observe the parser in-process).
_executor_factory: Callable[[int], Executor] = _make_executor


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 500 else line[:497] + "..."


def default_workers(ingest: IngestSettings) -> int:
    """settings.ingest.workers, or one per core (at most 4) when it is 0."""
    return ingest.workers or max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------------- the run
@dataclass(slots=True, eq=False)  # compared and hashed by identity
class _Task:
    found: Found
    sha: str
    status: str  # "added" | "updated"
    replaces: str | None = None
    also: list[str] = field(default_factory=list)  # more paths with the same content (this batch)


@dataclass(slots=True)
class _Ready:
    """A parsed, chunked document waiting for its missing vectors."""

    task: _Task
    doc: ParsedDocument
    chunks: list[Chunk]
    vectors: np.ndarray
    missing: deque[int]  # chunk indexes still to embed
    hashes: list[str]


class _Run:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        settings: Settings,
        workers: int,
        password: str | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.workers = workers
        self.password = password
        self.on_progress = on_progress
        self.cancel = cancel or threading.Event()
        self.batch = settings.embedder.batch_size
        self.chunker = make_chunker(settings.chunking, embedder.count_tokens)
        self.summary = IngestSummary()
        self.t = {"hash": 0.0, "parse": 0.0, "chunk": 0.0, "embed": 0.0, "index": 0.0, "wait": 0.0}
        self.t0 = time.perf_counter()
        self.files_total = 0
        self.files_done = 0
        self.current = ""
        self.chunks_done = 0
        self.bytes_to_parse = 0
        self.bytes_done = 0
        self.chunk_bytes_seen = 0  # bytes of files whose chunk count is known
        self.chunks_known = 0
        self.to_parse = 0
        self.work_t0: float | None = None
        self._last_progress = 0.0
        self._crash_suspects: set[_Task] = set()  # in flight when a worker died: retried one by one

    # --------------------------------------------------------------- progress
    def progress(self, phase: str, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_progress < 0.25:
            return
        self._last_progress = now
        s = self.summary
        work_s = now - self.work_t0 if self.work_t0 is not None else 0.0
        rate = self.chunks_done / work_s if work_s > 0.5 and self.chunks_done else 0.0
        eta: float | None = None
        if phase == "done":
            eta = 0.0
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
                chunks=self.chunks_done,
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
            )
        )

    def fail(self, path: str, error: str) -> None:
        self.summary.failed.append((path, _one_line(error)))
        self.files_done += 1
        self.current = path

    def fail_task(self, task: _Task, error: str) -> None:
        """A file failed; copies of the same content in this batch fail with it."""
        self.fail(task.found.key, error)
        for path in task.also:
            self.fail(path, f"{path}: same content as {task.found.key}, which failed: {_one_line(error)}")

    # --------------------------------------------------------------- classify
    def classify(self, files: list[Found]) -> list[_Task]:
        """Hash every file; record skips and dedups now; return what must be parsed."""
        s = self.summary
        tasks: list[_Task] = []
        by_sha: dict[str, _Task] = {}
        for f in files:
            if self.cancel.is_set():
                s.cancelled = True
                break
            t = time.perf_counter()
            try:
                sha = sha256_file(f.path)
            except OSError as exc:
                self.fail(f.key, f"{f.key}: cannot read ({exc.strerror or exc})")
                continue
            finally:
                self.t["hash"] += time.perf_counter() - t
            if sha in by_sha:  # the same content twice in this batch: parse once
                by_sha[sha].also.append(f.key)
                continue
            stored = self.store.find_by_sha(sha)
            at_path = self.store.find_by_path(f.key)
            if stored is not None:
                if f.key in _paths(stored):
                    s.skipped.append(f.key)
                else:
                    if at_path is not None and at_path.id != stored.id:
                        self._detach(at_path, f.key)
                    self.store.add_path(stored.id, f.key)
                    s.deduplicated.append(f.key)
                self.files_done += 1
                self.current = f.key
                self.progress("scanning")
                continue
            task = _Task(f, sha, "added")
            if at_path is not None:  # changed content at a known path
                task.status = "updated"
                if _paths(at_path) <= {f.key}:
                    task.replaces = at_path.id
                else:  # the old content still lives at other paths: keep it for them
                    self._detach(at_path, f.key)
            by_sha[sha] = task
            tasks.append(task)
            self.progress("scanning")
        return tasks

    def _detach(self, info: DocumentInfo, path: str) -> None:
        """Make `path` stop pointing at document `info` (removing it when that was its only path)."""
        if _paths(info) <= {path}:
            self.store.remove_document(info.id)
            return
        remove_path = getattr(self.store, "remove_path", None)
        if remove_path is not None:
            remove_path(path)

    # --------------------------------------------------------------- parse, chunk, embed, write
    def ingest(self, tasks: list[_Task]) -> None:
        if not tasks or self.summary.cancelled:
            return
        self.to_parse = len(tasks)
        self.bytes_to_parse = sum(t.found.size for t in tasks)
        self.work_t0 = time.perf_counter()
        pending: deque[_Task] = deque(tasks)
        solo: deque[_Task] = deque()  # suspects after a worker crash: parsed one at a time
        ready: deque[_Ready] = deque()
        inflight: dict[Future[tuple[bool, Any, float]], _Task] = {}
        n_workers = min(self.workers, len(tasks))
        max_inflight = n_workers + 1
        max_backlog = 4 * self.batch
        executor = _executor_factory(n_workers)
        solo_pool = False
        warmed = False
        try:
            while pending or solo or inflight or ready:
                if self.cancel.is_set():
                    self.summary.cancelled = True
                    break
                backlog = sum(len(r.missing) for r in ready)
                # Keep the workers busy, within the memory bounds.
                try:
                    if solo:
                        if not inflight:
                            task = solo.popleft()
                            inflight[self._submit(executor, task)] = task
                    else:
                        if solo_pool and not inflight and pending:  # suspects cleared: back to full width
                            executor.shutdown(wait=True)
                            executor, solo_pool = _executor_factory(n_workers), False
                        while pending and len(inflight) < max_inflight and (backlog < max_backlog or not ready):
                            task = pending.popleft()
                            inflight[self._submit(executor, task)] = task
                except BrokenProcessPool:
                    # A worker died after the last collection: the pool refuses new work. The task goes
                    # back; the in-flight futures report the crash below (and their files are retried
                    # one by one). With none in flight no file was being parsed: a fresh pool goes on.
                    (solo if solo else pending).appendleft(task)
                    if not inflight:
                        executor.shutdown(wait=False, cancel_futures=True)
                        executor = _executor_factory(1 if solo_pool else n_workers)
                if not warmed and inflight and not ready:
                    # While the first files parse, load the keyword analyzer's dictionary (jieba,
                    # seconds) so the first store write does not stall the embedder later.
                    from rag.store.analyzer import tokenize

                    tokenize("预热")
                    warmed = True
                # Collect parses: block only when there is nothing to embed meanwhile.
                if inflight:
                    t = time.perf_counter()
                    done, _ = wait(list(inflight), timeout=0 if ready else 0.5, return_when=FIRST_COMPLETED)
                    if not ready:
                        self.t["wait"] += time.perf_counter() - t
                    broken = False
                    for fut in done:
                        task = inflight.pop(fut)
                        try:
                            ok, value, seconds = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            if task in self._crash_suspects:
                                self.fail_task(task, f"{task.found.key}: the parser process crashed on this file")
                            else:
                                solo.append(task)
                            continue
                        except Exception as exc:  # noqa: BLE001 - e.g. a result that failed to unpickle: that file's line
                            self.fail_task(
                                task, f"{task.found.key}: parser result unusable ({type(exc).__name__}: {exc})"
                            )
                            continue
                        self._crash_suspects.discard(task)
                        self.t["parse"] += seconds
                        if ok:
                            self._prepare(task, value, ready)
                        else:
                            self.fail_task(task, value)
                    if broken:
                        solo.extend(inflight.values())
                        inflight.clear()
                        self._crash_suspects.update(solo)
                        executor.shutdown(wait=False, cancel_futures=True)
                        executor, solo_pool = _executor_factory(1), True
                    self.progress("ingesting")
                if ready:
                    self._embed_batch(ready)
                    self._write_completed(ready)
                    self.progress("ingesting")
        finally:
            executor.shutdown(wait=not self.summary.cancelled, cancel_futures=True)

    def _submit(self, executor: Executor, task: _Task) -> Future[tuple[bool, Any, float]]:
        return executor.submit(_parse_job, task.found.key, self.settings.ingest, self.password)

    def _prepare(self, task: _Task, doc: ParsedDocument, ready: deque[_Ready]) -> None:
        key = task.found.key
        if doc.sha256 and doc.sha256 != task.sha:
            self.fail_task(task, f"{key}: the file changed while it was being ingested; run the ingest again")
            return
        doc.sha256 = task.sha
        doc.source = key
        doc_id = task.sha[:16]
        t = time.perf_counter()
        try:
            chunks = self.chunker.chunk(doc, doc_id)
        except Exception as exc:  # noqa: BLE001 - one document the chunker cannot handle fails alone
            self.fail_task(task, f"{key}: chunking failed ({type(exc).__name__}: {exc})")
            return
        finally:
            self.t["chunk"] += time.perf_counter() - t
        from rag.store import chunk_text_hash

        hashes = [chunk_text_hash(c.text) for c in chunks]
        vectors = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
        t = time.perf_counter()
        cached = self.store.cached_vectors(hashes) if chunks else {}
        self.t["index"] += time.perf_counter() - t
        missing: deque[int] = deque()
        first_of: dict[str, int] = {}
        for i, h in enumerate(hashes):
            vec = cached.get(h)
            if vec is not None and vec.shape == (self.embedder.dim,):
                vectors[i] = vec
                self.summary.reused += 1
            elif h in first_of:  # the same text twice in one document: embed it once
                self.summary.reused += 1
            else:
                first_of[h] = i
                missing.append(i)
        self.summary.pages += doc.page_count
        self.chunks_known += len(chunks)
        self.chunk_bytes_seen += task.found.size
        self.chunks_done += len(chunks) - len(missing)
        ready.append(_Ready(task, doc, chunks, vectors, missing, hashes))

    def _embed_batch(self, ready: deque[_Ready]) -> None:
        """Embed up to one batch of missing texts, taken from the oldest documents first."""
        picks: list[tuple[_Ready, int]] = []
        for r in ready:
            while r.missing and len(picks) < self.batch:
                picks.append((r, r.missing.popleft()))
            if len(picks) >= self.batch:
                break
        if not picks:
            return
        t = time.perf_counter()
        vecs = self.embedder.embed_documents([r.chunks[i].text for r, i in picks])
        self.t["embed"] += time.perf_counter() - t
        for (r, i), v in zip(picks, vecs, strict=True):
            r.vectors[i] = v
        self.summary.embedded += len(picks)
        self.chunks_done += len(picks)

    def _write_completed(self, ready: deque[_Ready]) -> None:
        while ready and not ready[0].missing:
            if self.cancel.is_set():
                return
            r = ready.popleft()
            self._fill_duplicates(r)
            key = r.task.found.key
            t = time.perf_counter()
            try:
                info = self.store.add_document(r.doc, r.chunks, r.vectors, replaces=r.task.replaces)
                for path in r.task.also:
                    self.store.add_path(info.id, path)
            except CiteqaError as exc:
                self.fail_task(r.task, f"{key}: could not be stored ({_one_line(str(exc))})")
                continue
            finally:
                self.t["index"] += time.perf_counter() - t
            s = self.summary
            (s.updated if r.task.status == "updated" else s.added).append(key)
            s.deduplicated.extend(r.task.also)
            s.chunks += len(r.chunks)
            self.files_done += 1 + len(r.task.also)
            self.current = key
            self.progress("ingesting", force=True)

    @staticmethod
    def _fill_duplicates(r: _Ready) -> None:
        """Copy vectors to repeated texts of the same document (embedded once)."""
        first: dict[str, int] = {}
        for i, h in enumerate(r.hashes):
            j = first.setdefault(h, i)
            if j != i and not r.vectors[i].any():
                r.vectors[i] = r.vectors[j]

    # --------------------------------------------------------------- prune
    def prune(self, roots: list[Path]) -> None:
        if not roots or self.summary.cancelled:
            return
        self.progress("pruning", force=True)
        remove_path = getattr(self.store, "remove_path", None)
        for info in self.store.list_documents():
            paths = _paths(info)
            gone = {p for p in paths if is_under(p, roots) and not Path(p).exists()}
            if not gone:
                continue
            try:
                if gone == paths:
                    self.store.remove_document(info.id)
                elif remove_path is not None:
                    for p in sorted(gone):
                        remove_path(p)
                else:
                    continue
            except DocumentNotFound:
                continue
            self.summary.pruned.extend(sorted(gone))


def _paths(info: DocumentInfo) -> set[str]:
    return set(info.paths) | ({info.source} if info.source else set())


def ingest_paths(
    paths: Sequence[Path],
    store: Store,
    embedder: Embedder,
    settings: Settings,
    *,
    workers: int | None = None,
    glob: str | None = None,
    prune: bool = False,
    password: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> IngestSummary:
    """Ingest files and folders into `store` incrementally; see the module docstring.

    Never raises for a bad file: each failure is one (path, one-line error) in `summary.failed`
    and the batch continues. Store or embedder errors that affect every file do raise.
    """
    from ingest.parsers import supported_extensions

    run = _Run(store, embedder, settings, workers or default_workers(settings.ingest), password, on_progress, cancel)
    files, errors = discover(paths, supported_extensions(), glob)
    run.files_total = len(files) + len(errors)
    for path, error in errors:
        run.fail(path, error)
    run.progress("scanning", force=True)
    tasks = run.classify(files)
    run.ingest(tasks)
    if prune:
        run.prune(folder_roots(paths))
    run.summary.seconds = time.perf_counter() - run.t0
    run.summary.timings = dict(run.t)
    run.progress("done", force=True)
    return run.summary
