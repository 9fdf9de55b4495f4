"""Parser worker processes and the `ParsePool` that schedules files onto them.

The pool keeps at most `workers + 1` files in flight and holds new parses back while more than a few
embedding batches of chunks wait, so memory stays bounded on any corpus. Each file's work is bounded:

- **time**: `ingest.parse_timeout_s` per file, plus `ingest.parse_timeout_per_page_s` for each page of a
  PDF (its page count is read, cheaply, when the worker starts on it; other formats get the flat limit).
  A worker past its file's limit is killed.
- **memory**: `ingest.max_worker_memory_mb` caps each worker's address space (RLIMIT_AS, so the limit
  holds inside C code too): an allocation past it fails in the worker, the file fails, and the worker is
  replaced so that it does not carry a fragmented heap into the next file.

Either way the file fails with one line naming the limit and its setting, the pool is rebuilt, and the
other files that were in flight are parsed again: they were not at fault. A worker that dies on its
own (segfault, OOM kill) fails only the file it was on: the files in flight with it are retried one at
a time in a one-worker pool, then the pool goes back to full width.

Workers start with multiprocessing's "forkserver" method (no fork of a process that may be running
threads, e.g. a server).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.records import ParseTask, one_line
from ingest.tempdirs import use_named_temp_dir
from rag.errors import CiteqaError, ParseError
from rag.records import ParsedDocument
from rag.settings import IngestSettings

# What C libraries say when an allocation fails under RLIMIT_AS (onnxruntime: std::bad_alloc; MuPDF:
# "malloc ... failed"; the dynamic loader, importing OCR's libraries: "failed to map segment"); Python
# raises MemoryError.
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|out of memory|cannot allocate|failed to allocate|malloc.{0,40}fail|failed to map segment", re.I
)


def default_workers(ingest: IngestSettings) -> int:
    """settings.ingest.workers, or one per core (at most 4) when it is 0."""
    return ingest.workers or max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------------- worker side
@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker of one pool starts with (passed to its initializer)."""

    owner_pid: int
    memory_mb: int  # RLIMIT_AS for the worker; 0 = no limit
    started: Any  # the pool's channel (a multiprocessing SimpleQueue): "started file X at t", "X has n pages"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A worker's answer for one file. Errors travel as text: an exception that cannot be unpickled
    would break the pool."""

    doc: ParsedDocument | None
    error: str  # the one-line failure when doc is None
    seconds: float
    pid: int
    over_memory: bool = False  # the worker hit its memory limit: replace it


_setup: WorkerSetup | None = None  # this worker's setup (None in a thread pool, as tests use)


def worker_init(setup: WorkerSetup) -> None:
    global _setup
    _setup = setup
    # Workers parse; the main process embeds with every core. OCR's onnxruntime must not fan out.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        os.nice(5)
    except OSError:  # pragma: no cover - not permitted on some systems
        pass
    if setup.memory_mb:
        _limit_address_space(setup.memory_mb << 20)
    # A pool worker waits on a queue whose write end it also holds, so it never sees its owner die:
    # when the ingest process is killed (kill -9, OOM), exit instead of idling forever.
    threading.Thread(target=_exit_when_gone, args=(setup.owner_pid,), daemon=True, name="owner-watchdog").start()


def _limit_address_space(limit: int) -> None:
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - no RLIMIT_AS here (Windows, some macOS)
        pass


def _exit_when_gone(owner_pid: int, interval_s: float = 1.0) -> None:
    while True:
        time.sleep(interval_s)
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # pragma: no cover - the pid was reused by another user's process
            os._exit(0)


def parse_job(path: str, ingest: IngestSettings, password: str | None) -> Outcome:
    """Runs in a worker process: parse one file into an Outcome."""
    from ingest.parsers import parse_file

    pid = os.getpid()
    if _setup is not None:
        _setup.started.put(("start", pid, path, time.monotonic()))
        if ingest.parse_timeout_per_page_s:
            pages = _pdf_pages(Path(path))
            if pages:
                _setup.started.put(("pages", pid, path, pages))
    t0 = time.perf_counter()
    try:
        doc = parse_file(Path(path), ingest, password=password)
    except Exception as exc:  # noqa: BLE001 - every failure is that file's one line; the batch continues
        seconds = time.perf_counter() - t0
        if _setup is not None and _setup.memory_mb and _out_of_memory(exc):
            return Outcome(None, memory_limit_line(path, _setup.memory_mb), seconds, pid, over_memory=True)
        if not isinstance(exc, CiteqaError):
            exc = ParseError(path, f"unexpected {type(exc).__name__}: {exc}")
        return Outcome(None, one_line(str(exc)), seconds, pid)
    return Outcome(doc, "", time.perf_counter() - t0, pid)


def _pdf_pages(path: Path) -> int | None:
    """A PDF's page count (opening it reads only the cross-reference table), else None."""
    from ingest.parsers.files import read_head, starts_as_pdf

    try:
        if not starts_as_pdf(read_head(path)):
            return None
        import pymupdf

        with pymupdf.open(str(path), filetype="pdf") as doc:
            return int(doc.page_count)
    except Exception:  # noqa: BLE001 - the parse itself reports what is wrong with the file
        return None


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or _OUT_OF_MEMORY.search(f"{type(seen).__name__}: {seen}"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def memory_limit_line(path: str, memory_mb: int) -> str:
    return f"{path}: memory limit of {memory_mb} MB per parser process exceeded (ingest.max_worker_memory_mb)"


def make_executor(workers: int, setup: WorkerSetup) -> Executor:
    """The parser pool. forkserver: cheap workers without forking a process that runs threads."""
    use_named_temp_dir()  # before the forkserver starts: its socket goes in there
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        # PyMuPDF too: importing it takes a second or more, and a worker replaced after a kill should
        # start on the next file at once.
        ctx.set_forkserver_preload(["ingest.parsers", "ingest.parsers.pdf"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init, initargs=(setup,))


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


ExecutorFactory = Callable[[int, WorkerSetup], Executor]


# ---------------------------------------------------------------------- the pool
@dataclass(slots=True)
class Parsed:
    """One file's parse, as the pool hands it back: a document, or the file's one-line failure."""

    task: ParseTask
    doc: ParsedDocument | None
    error: str = ""
    seconds: float = 0.0


@dataclass(slots=True)
class _Running:
    pid: int
    started: float  # time.monotonic() in the worker (system-wide on Linux and macOS)
    pages: int = 0


class ParsePool:
    """Parses tasks in worker processes: submitting within the memory bounds, collecting, retrying
    after crashes and enforcing the per-file limits (see the module docstring)."""

    def __init__(
        self,
        tasks: list[ParseTask],
        workers: int,
        ingest: IngestSettings,
        password: str | None,
        batch: int,
        factory: ExecutorFactory,
    ) -> None:
        self.ingest = ingest
        self.password = password
        self.factory = factory
        self.pending: deque[ParseTask] = deque(tasks)
        self.solo: deque[ParseTask] = deque()  # suspects after a worker crash: parsed one at a time
        self.inflight: dict[Future[Outcome], ParseTask] = {}
        self.n_workers = max(1, min(workers, len(tasks)))
        self.max_inflight = self.n_workers + 1
        self.max_backlog = 4 * batch  # chunks waiting for the embedder before new parses wait
        self._suspects: set[ParseTask] = set()  # in flight when a worker died: retried one by one
        self._running: dict[str, _Running] = {}  # file key -> the worker on it (from the channel)
        self._channel: Any = None
        self._solo_pool = False
        self._executor = self._new_executor(self.n_workers)

    @property
    def busy(self) -> bool:
        """Files left to parse or being parsed."""
        return bool(self.pending or self.solo or self.inflight)

    # --------------------------------------------------------------- submit
    def fill(self, backlog: int, embedder_idle: bool) -> None:
        """Keep the workers busy while fewer than `max_backlog` chunks wait (or the embedder has none)."""
        task: ParseTask | None = None
        try:
            if self.solo:
                if not self.inflight:
                    task = self.solo.popleft()
                    self._submit(task)
            else:
                if self._solo_pool and not self.inflight and self.pending:  # suspects cleared: full width
                    self._executor.shutdown(wait=True)
                    self._executor, self._solo_pool = self._new_executor(self.n_workers), False
                while (
                    self.pending
                    and len(self.inflight) < self.max_inflight
                    and (backlog < self.max_backlog or embedder_idle)
                ):
                    task = self.pending.popleft()
                    self._submit(task)
        except BrokenProcessPool:
            # A worker died after the last collection: the pool refuses new work. The task goes back;
            # the in-flight futures report the crash in collect() (and their files are retried one by
            # one). With none in flight no file was being parsed: a fresh pool goes on.
            assert task is not None
            (self.solo if self.solo else self.pending).appendleft(task)
            if not self.inflight:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor(1 if self._solo_pool else self.n_workers)

    def _submit(self, task: ParseTask) -> None:
        fut = self._executor.submit(parse_job, task.found.key, self.ingest, self.password)
        self.inflight[fut] = task

    # --------------------------------------------------------------- collect
    def collect(self, timeout: float) -> list[Parsed]:
        """Wait up to `timeout` s for parses to finish; return those finished (documents and failures)."""
        out: list[Parsed] = []
        if not self.inflight:
            return out
        done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        self._read_channel()
        broken = False
        recycle: set[int] = set()
        for fut in done:
            task = self.inflight.pop(fut)
            self._running.pop(task.found.key, None)
            try:
                outcome = fut.result()
            except BrokenProcessPool:
                broken = True
                if task in self._suspects:
                    out.append(Parsed(task, None, f"{task.found.key}: the parser process crashed on this file"))
                else:
                    self.solo.append(task)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. a result that failed to unpickle: that file's line
                out.append(
                    Parsed(task, None, f"{task.found.key}: parser result unusable ({type(exc).__name__}: {exc})")
                )
                continue
            self._suspects.discard(task)
            out.append(Parsed(task, outcome.doc, outcome.error, outcome.seconds))
            if outcome.over_memory:
                recycle.add(outcome.pid)
        if broken:
            self.solo.extend(self.inflight.values())
            self.inflight.clear()
            self._suspects.update(self.solo)
            self._restart(1, kill=set())
            self._solo_pool = True
            return out
        out.extend(self._enforce_time_limit(recycle))
        return out

    def _read_channel(self) -> None:
        channel = self._channel
        while channel is not None and not channel.empty():
            kind, pid, key, value = channel.get()
            if kind == "start":
                self._running[key] = _Running(pid, value)
            elif key in self._running:
                self._running[key].pages = value

    def _enforce_time_limit(self, recycle: set[int]) -> list[Parsed]:
        """Kill workers past their file's time limit (and those to recycle); requeue the innocent."""
        now = time.monotonic()
        out: list[Parsed] = []
        kill = set(recycle)
        for fut, task in list(self.inflight.items()):
            run = self._running.get(task.found.key)
            if run is None:
                continue
            limit = self.ingest.parse_timeout_s + self.ingest.parse_timeout_per_page_s * run.pages
            if now - run.started > limit:
                del self.inflight[fut]
                self._suspects.discard(task)
                out.append(
                    Parsed(task, None, self._time_limit_line(task.found.key, run.pages, limit), now - run.started)
                )
                kill.add(run.pid)
        if kill:
            self._restart(1 if self._solo_pool else self.n_workers, kill)
        return out

    def _time_limit_line(self, key: str, pages: int, limit: float) -> str:
        base, per_page = self.ingest.parse_timeout_s, self.ingest.parse_timeout_per_page_s
        if not (pages and per_page):
            return f"{key}: parse time limit of {limit:g} s exceeded (ingest.parse_timeout_s)"
        return (
            f"{key}: parse time limit of {limit:g} s exceeded (ingest.parse_timeout_s = {base:g} s"
            f" + ingest.parse_timeout_per_page_s = {per_page:g} s x {pages} page{'s' if pages > 1 else ''})"
        )

    # --------------------------------------------------------------- pool lifecycle
    def _new_executor(self, workers: int) -> Executor:
        self._channel = _context().SimpleQueue()
        self._running.clear()
        return self.factory(workers, WorkerSetup(os.getpid(), self.ingest.max_worker_memory_mb, self._channel))

    def _restart(self, workers: int, kill: set[int]) -> None:
        """Kill `kill` (and so, as the pool breaks, its other workers); parse the files in flight again."""
        self._kill(kill)
        for task in reversed(list(self.inflight.values())):
            (self.solo if task in self._suspects else self.pending).appendleft(task)
        self.inflight.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor(workers)

    def close(self, kill: bool = False) -> None:
        """Shut the pool down; `kill` (a cancelled run) kills the workers instead of letting them finish."""
        if kill:
            self._read_channel()
            pids = {r.pid for r in self._running.values()}
            # The processes themselves too: a worker may have taken a file without saying so yet.
            pids |= set(getattr(self._executor, "_processes", None) or ())
            self._kill(pids)
        self._executor.shutdown(wait=not kill, cancel_futures=True)

    @staticmethod
    def _kill(pids: set[int]) -> None:
        for pid in pids - {os.getpid()}:  # a thread pool (tests) reports this process: never kill it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
