"""Bulk and incremental ingestion: files or folders -> parsed -> chunked -> embedded -> one store write each.

    summary = ingest_paths([Path("reports")], store, embedder, settings, on_progress=renderer.update)

How a run goes:
1. **Discover** files (ingest.discover) and **classify** each by the sha256 of its bytes
   (ingest.planning): unchanged content is *skipped* without parsing, content stored under another path
   is *deduplicated* (the path is recorded), a known path with new content is *updated*, the rest *added*.
2. **Parse** in worker processes (ingest.workers.ParsePool; `workers`, default settings.ingest.workers;
   0 = one per core, at most 4), with bounded memory, a time and a memory limit per file, and crash
   isolation: a parser error, a file over a limit or a worker that dies fails only that file.
3. **Chunk** (rag.chunking, with contextual headers) on this process.
4. **Write** each document with one `store.add_document` call (one transaction): a kill at any
   moment leaves every document either fully stored or absent, and rerunning the same command
   resumes with exactly the chunks a clean run gives (document and chunk ids derive from content).
   - On stores that defer embedding (the embedded store, pgvector) the document is written as soon as
     it is chunked, without vectors: it is searchable by keyword at once, and the texts to embed wait
     in the store's queue (ingest.embedqueue). Then the **embedding phase** empties the queue, oldest
     first, one batch per transaction — unless `wait=False`, which returns once every file is written
     (`summary.pending` chunks still to embed; the next run, or `citeqa kb embed`, continues).
   - Otherwise (Milvus) chunks are **embedded** first, in batches of settings.embedder.batch_size that
     span documents while the workers keep parsing, and the document is written with its vectors.
   Either way vectors already in the store for the same embedded text (sha256) are reused, so
   re-chunking or re-ingesting an edited document only embeds new text.
5. **Prune** (`prune=True`, after the writes): documents whose files under the given folders are gone
   are removed (a document that still has another path only loses the missing one).

`cancel` (a threading.Event) is checked between documents and between embedding batches: documents
already written stay, the rest are left for the next run, the workers are killed (a file stuck in a
parser does not keep a core busy), and the summary says `cancelled`.

Workers start with multiprocessing's "forkserver" method, so as with any multiprocessing code a
*script* that calls `ingest_paths` must guard its entry point with `if __name__ == "__main__":` (the
`citeqa` command, the server, `python -c` and pytest all do).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ingest import planning
from ingest.discover import discover, folder_roots
from ingest.embedqueue import QueueLock, defers_embedding, embed_batch, lock_path
from ingest.records import IngestProgress, IngestSummary, ParseTask, ProgressCallback, Ready, Tally, one_line
from ingest.workers import ExecutorFactory, ParsePool, default_workers, make_executor
from rag.chunking import make_chunker
from rag.errors import CiteqaError
from rag.protocols import Embedder, Store
from rag.records import ParsedDocument, indexed_text
from rag.settings import Settings

__all__ = ["IngestProgress", "IngestSummary", "ProgressCallback", "default_workers", "embed_pending", "ingest_paths"]

# The pool factory, replaceable in tests (e.g. by a thread pool to observe the parser in-process).
_executor_factory: ExecutorFactory = make_executor


class _Run:
    """Parse results -> chunks -> vectors -> one store write per document."""

    def __init__(self, store: Store, embedder: Embedder, settings: Settings, tally: Tally) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.tally = tally
        self.summary = tally.summary
        self.batch = settings.embedder.batch_size
        self.chunker = make_chunker(settings.chunking, embedder.count_tokens)
        self.defer = defers_embedding(store)

    def ingest(self, tasks: list[ParseTask], workers: int, password: str | None, cancel: threading.Event) -> None:
        if not tasks or self.summary.cancelled:
            return
        tally = self.tally
        tally.to_parse = len(tasks)
        tally.bytes_to_parse = sum(t.found.size for t in tasks)
        tally.work_t0 = time.perf_counter()
        ready: deque[Ready] = deque()
        pool = ParsePool(tasks, workers, self.settings.ingest, password, self.batch, _executor_factory)
        warmed = False
        try:
            while pool.busy or ready:
                if cancel.is_set():
                    self.summary.cancelled = True
                    break
                pool.fill(backlog=sum(len(r.missing) for r in ready), embedder_idle=not ready)
                if not warmed and pool.inflight and not ready:
                    # While the first files parse, load the keyword analyzer's dictionary (jieba,
                    # seconds) so the first store write does not stall the embedder later.
                    from rag.store.analyzer import tokenize

                    tokenize("预热")
                    warmed = True
                # Collect parses: block only when there is nothing to embed meanwhile.
                if pool.inflight:
                    idle, t = not ready, time.perf_counter()
                    parsed = pool.collect(timeout=0.5 if idle else 0)
                    if idle:
                        tally.t["wait"] += time.perf_counter() - t
                    for p in parsed:
                        tally.t["parse"] += p.seconds
                        if p.doc is not None:
                            self._prepare(p.task, p.doc, ready)
                        else:
                            tally.fail_task(p.task, p.error)
                    tally.progress("ingesting")
                if ready:
                    self._embed_batch(ready)
                    self._write_completed(ready, cancel)
                    tally.progress("ingesting")
        except BaseException:  # an error for every file (store, embedder) or Ctrl-C: no parse is waited for
            pool.close(kill=True)
            raise
        pool.close(kill=self.summary.cancelled)

    def _prepare(self, task: ParseTask, doc: ParsedDocument, ready: deque[Ready]) -> None:
        key = task.found.key
        if doc.sha256 and doc.sha256 != task.sha:
            self.tally.fail_task(task, f"{key}: the file changed while it was being ingested; run the ingest again")
            return
        doc.sha256 = task.sha
        doc.source = key
        doc_id = task.sha[:16]
        t = time.perf_counter()
        try:
            chunks = self.chunker.chunk(doc, doc_id)
        except Exception as exc:  # noqa: BLE001 - one document the chunker cannot handle fails alone
            self.tally.fail_task(task, f"{key}: chunking failed ({type(exc).__name__}: {exc})")
            return
        finally:
            self.tally.t["chunk"] += time.perf_counter() - t
        from rag.store import chunk_text_hash

        hashes = [chunk_text_hash(indexed_text(c)) for c in chunks]
        # Written without vectors (defer), the store itself takes what it already holds; the lookup then
        # only counts the reuse.
        vectors = None if self.defer else np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
        t = time.perf_counter()
        cached = self.store.cached_vectors(hashes) if chunks else {}
        self.tally.t["index"] += time.perf_counter() - t
        missing: deque[int] = deque()
        first_of: dict[str, int] = {}
        for i, h in enumerate(hashes):
            vec = cached.get(h)
            if vec is not None and vec.shape == (self.embedder.dim,):
                if vectors is not None:
                    vectors[i] = vec
                self.summary.reused += 1
            elif h in first_of:  # the same text twice in one document: embed it once
                self.summary.reused += 1
            else:
                first_of[h] = i
                missing.append(i)
        self.summary.pages += doc.page_count
        self.tally.sized(task, len(chunks))
        if self.defer:  # written now, without vectors: the store queues what it has no vector for
            self.tally.chunks_done += len(chunks)
            self._store(Ready(task, doc, chunks, None, missing, hashes))
            return
        assert vectors is not None
        self.tally.chunks_done += len(chunks) - len(missing)
        ready.append(Ready(task, doc, chunks, vectors, missing, hashes))

    def _embed_batch(self, ready: deque[Ready]) -> None:
        """Embed up to one batch of missing texts, taken from the oldest documents first."""
        picks: list[tuple[Ready, int]] = []
        for r in ready:
            while r.missing and len(picks) < self.batch:
                picks.append((r, r.missing.popleft()))
            if len(picks) >= self.batch:
                break
        if not picks:
            return
        t = time.perf_counter()
        vecs = self.embedder.embed_documents([indexed_text(r.chunks[i]) for r, i in picks])
        self.tally.t["embed"] += time.perf_counter() - t
        for (r, i), v in zip(picks, vecs, strict=True):
            r.vectors[i] = v
        self.summary.embedded += len(picks)
        self.tally.chunks_done += len(picks)

    def _write_completed(self, ready: deque[Ready], cancel: threading.Event) -> None:
        while ready and not ready[0].missing:
            if cancel.is_set():
                return
            r = ready.popleft()
            _fill_duplicates(r)
            self._store(r)

    def _store(self, r: Ready) -> None:
        """Write one document (vectors None: the store queues its texts for the embedding phase)."""
        key = r.task.found.key
        t = time.perf_counter()
        try:
            info = self.store.add_document(r.doc, r.chunks, r.vectors, replaces=r.task.replaces)
            for path in r.task.also:
                self.store.add_path(info.id, path)
        except CiteqaError as exc:
            self.tally.fail_task(r.task, f"{key}: could not be stored ({one_line(str(exc))})")
            return
        finally:
            self.tally.t["index"] += time.perf_counter() - t
        s = self.summary
        (s.updated if r.task.status == "updated" else s.added).append(key)
        s.deduplicated.extend(r.task.also)
        s.chunks += len(r.chunks)
        self.tally.done(key, 1 + len(r.task.also))
        self.tally.progress("ingesting", force=True)

    def embed_queued(self, lock: Path, cancel: threading.Event) -> None:
        """The embedding phase: empty the store's queue (see ingest.embedqueue), with progress."""
        tally = self.tally

        def counts() -> None:
            tally.embedding_counts(*self.store.embedding_counts())
            tally.progress("embedding", force=True)

        with QueueLock(lock) as queue:
            counts()
            if not queue.wait(cancel, counts):  # another process is embedding this KB: follow it
                self.summary.cancelled = True
                return
            while not cancel.is_set():
                n, embed_s, store_s = embed_batch(self.store, self.embedder, self.batch)
                if n == 0:
                    return
                tally.t["embed"] += embed_s
                tally.t["index"] += store_s
                self.summary.embedded += n
                counts()
            # Cancelled between batches: only "cancelled" when the queue still holds work.
            self.summary.cancelled = bool(self.store.pending_embeddings(1))


def _fill_duplicates(r: Ready) -> None:
    """Copy vectors to repeated texts of the same document (embedded once)."""
    first: dict[str, int] = {}
    for i, h in enumerate(r.hashes):
        j = first.setdefault(h, i)
        if j != i and not r.vectors[i].any():
            r.vectors[i] = r.vectors[j]


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
    wait: bool = True,
) -> IngestSummary:
    """Ingest files and folders into `store` incrementally; see the module docstring.

    `wait=False` returns once every file is written (searchable by keyword); chunks left to embed are
    in `summary.pending` (only stores that defer embedding return before embedding).

    Never raises for a bad file: each failure is one (path, one-line error) in `summary.failed`
    and the batch continues. Store or embedder errors that affect every file do raise.
    """
    from ingest.parsers import supported_extensions

    cancel = cancel or threading.Event()
    tally = Tally(on_progress)
    run = _Run(store, embedder, settings, tally)
    tally.embedding_follows = run.defer and wait
    files, errors = discover(paths, supported_extensions(), glob)
    tally.files_total = len(files) + len(errors)
    for path, error in errors:
        tally.fail(path, error)
    tally.progress("scanning", force=True)
    tasks = planning.classify(files, store, tally, cancel)
    run.ingest(tasks, workers or default_workers(settings.ingest), password, cancel)
    if prune:
        planning.prune(folder_roots(paths), store, tally)
    tally.summary.stored_s = time.perf_counter() - tally.t0
    # Also what earlier runs left queued (a kill, --no-wait): a rerun resumes the embedding.
    return _embedding_phase(run, store, settings, cancel, wait=wait and not tally.summary.cancelled)


def embed_pending(
    store: Store,
    embedder: Embedder,
    settings: Settings,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> IngestSummary:
    """Only the embedding phase: embed what the store's queue holds (`citeqa kb embed`)."""
    run = _Run(store, embedder, settings, Tally(on_progress))
    return _embedding_phase(run, store, settings, cancel or threading.Event(), wait=True)


def _embedding_phase(
    run: _Run, store: Store, settings: Settings, cancel: threading.Event, *, wait: bool
) -> IngestSummary:
    """The embedding phase when `wait` (and the store defers embedding), then the summary's totals."""
    tally = run.tally
    if run.defer:
        if wait:
            run.embed_queued(lock_path(settings, store.name), cancel)
        embedded, chunks = store.embedding_counts()
        tally.summary.pending = chunks - embedded
    tally.summary.seconds = time.perf_counter() - tally.t0
    tally.summary.timings = dict(tally.t)
    tally.progress("done", force=True)
    return tally.summary
