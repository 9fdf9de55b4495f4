"""What one running app holds: settings, the loaded models, open knowledge bases, jobs, metrics.

Models load once, in a background thread started by the lifespan, so `/healthz` answers at once and
`/readyz` says 503 until they are in. Requests that need a model wait for it (up to the request time
limit). Stores, retrievers and QA pipelines are cached per knowledge base.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import CiteqaError, DocumentNotFound, KnowledgeBaseNotFound, ModelNotAvailable
from rag.protocols import Embedder, Generator, Retriever, Store
from rag.settings import Settings
from server.llm_queue import QueuedGenerator
from server.metrics import Metrics

if TYPE_CHECKING:
    from ingest.pipeline import IngestSummary
    from server.jobs import JobManager

log = logging.getLogger("citeqa.server")

RETRY_LLM_S = 30.0


def kb_not_found(kb: str) -> KnowledgeBaseNotFound:
    """The server's "no such KB" error: it names no other knowledge base (a key may be scoped elsewhere)."""
    return KnowledgeBaseNotFound(f"knowledge base {kb!r} not found (GET /v1/kbs lists the knowledge bases you can use)")


class AppState:
    """Shared by every request of one app (reached through `request.app.state.citeqa`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.embedder: Embedder | None = embedder
        self.generator: QueuedGenerator | None = self._queued(generator) if generator is not None else None
        self.embedder_error: str | None = None
        self.generator_error: str | None = None
        self._embedder_loaded = threading.Event()
        self._generator_loaded = threading.Event()  # set when loading finished, failed or not
        self._generator_tried_at = 0.0
        self._ingest_embedder: Embedder | None = None
        self._lock = threading.RLock()
        self._stores: dict[str, Store] = {}
        self._retrievers: dict[str, Retriever] = {}
        self._pipelines: dict[str, Any] = {}
        self.jobs: JobManager | None = None
        # Answers wait for the LLM in their own threads, so a queue of them never starves the
        # threadpool that serves searches and uploads.
        self.answer_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="citeqa-answer")
        self._loader: threading.Thread | None = None
        if embedder is not None:
            self._embedder_loaded.set()
        if generator is not None:
            self._generator_loaded.set()

    # --- models --------------------------------------------------------------------------------
    def _queued(self, generator: Generator) -> QueuedGenerator:
        return QueuedGenerator(
            generator,
            on_generation=self.metrics.observe_generation,
            on_queue=self.metrics.llm_queue.set,
        )

    def start_loading(self) -> None:
        """Load whatever models were not injected, in a background thread."""
        if self._embedder_loaded.is_set() and self._generator_loaded.is_set():
            self._update_ready()
            return
        self._loader = threading.Thread(target=self._load_models, name="citeqa-model-loader", daemon=True)
        self._loader.start()

    def _load_models(self) -> None:
        from rag.embedders import make_embedder

        if not self._embedder_loaded.is_set():
            try:
                self.embedder = make_embedder(self.settings.embedder)
                log.info("embedder %s loaded", self.embedder.id)
            except (CiteqaError, ImportError, OSError, RuntimeError, ValueError) as exc:
                self.embedder_error = f"embedder {self.settings.embedder.name!r} could not be loaded: {exc}"
                log.error(self.embedder_error)
            finally:
                self._embedder_loaded.set()
        if not self._generator_loaded.is_set():
            try:
                self._load_generator()
            finally:
                self._generator_loaded.set()
        self._update_ready()

    def _load_generator(self) -> None:
        from rag.llm import make_generator

        self._generator_tried_at = time.monotonic()
        try:
            inner = make_generator(self.settings)  # llama.cpp keeps evaluated prefixes (rag.llm.kv_cache)
            self.generator = self._queued(inner)
            self.generator_error = None
            log.info("LLM %s loaded", self.generator.id)
        except (CiteqaError, ImportError, OSError, RuntimeError, ValueError) as exc:
            self.generator_error = f"LLM {self.settings.llm.name!r} could not be loaded: {exc}"
            log.error(self.generator_error)

    def retry_generator(self) -> None:
        """A remote LLM server may come up after us: try loading again, at most every RETRY_LLM_S seconds."""
        if self.generator is not None or not self._generator_loaded.is_set():
            return
        with self._lock:
            if self.generator is None and time.monotonic() - self._generator_tried_at > RETRY_LLM_S:
                self._load_generator()
                self._update_ready()

    def _update_ready(self) -> None:
        self.metrics.models_ready.set(1 if self.ready else 0)

    @property
    def loading(self) -> bool:
        """The models are still being loaded (not failed: then `ready` stays False but this is False)."""
        return not (self._embedder_loaded.is_set() and self._generator_loaded.is_set())

    @property
    def ready(self) -> bool:
        return self.embedder is not None and self.generator is not None

    def readiness(self) -> dict[str, Any]:
        """What /readyz reports."""
        self.retry_generator()
        return {
            "ready": self.ready,
            "embedder": {
                "name": self.settings.embedder.name,
                "loaded": self.embedder is not None,
                "error": self.embedder_error,
            },
            "llm": {
                "name": self.settings.llm.name,
                "loaded": self.generator is not None,
                "loading": not self._generator_loaded.is_set(),
                "error": self.generator_error,
            },
        }

    def wait_embedder(self, timeout: float | None = None) -> Embedder:
        """The query embedder, waiting for it to load; ModelNotAvailable if it failed or took too long."""
        self._embedder_loaded.wait(self.settings.server.request_timeout_s if timeout is None else timeout)
        if self.embedder is None:
            raise ModelNotAvailable(self.embedder_error or "the embedder is still loading; retry shortly")
        return self.embedder

    def wait_generator(self, timeout: float | None = None) -> QueuedGenerator:
        """The LLM, waiting for it to load; ModelNotAvailable if it failed or took too long."""
        self._generator_loaded.wait(self.settings.server.request_timeout_s if timeout is None else timeout)
        self.retry_generator()
        if self.generator is None:
            raise ModelNotAvailable(self.generator_error or "the LLM is still loading; retry shortly")
        return self.generator

    def ingest_embedder(self) -> Embedder:
        """A second embedder instance for ingestion jobs.

        The embedder serialises its calls; sharing one instance would make every query wait behind an
        ingestion batch. A separate instance (on half the cores) keeps queries flowing during ingestion.
        """
        with self._lock:
            if self._ingest_embedder is None:
                from rag.embedders import make_embedder

                cfg = self.settings.embedder
                threads = cfg.threads or max(1, (os.cpu_count() or 2) // 2)
                self._ingest_embedder = make_embedder(cfg.model_copy(update={"threads": threads}))
            return self._ingest_embedder

    # --- knowledge bases -------------------------------------------------------------------------
    def store(self, kb: str, *, create: bool = False) -> Store:
        """The cached, open store of `kb` (KnowledgeBaseNotFound unless create=True)."""
        from rag.kb import open_kb

        embedder = self.wait_embedder()
        with self._lock:
            store = self._stores.get(kb)
            if store is None:
                try:
                    store = open_kb(self.settings, kb, embedder, create=create)
                except KnowledgeBaseNotFound:  # the library's message lists every KB and the home folder
                    raise kb_not_found(kb) from None
                self._stores[kb] = store
            return store

    def open_stores(self) -> dict[str, Store]:
        """The knowledge bases this process has open now (for /metrics; opening one there would be slow)."""
        with self._lock:
            return dict(self._stores)

    def retriever(self, kb: str) -> Retriever:
        from rag.retrieval import make_retriever

        embedder = self.wait_embedder()
        with self._lock:
            retriever = self._retrievers.get(kb)
            if retriever is None:
                # The queued LLM, loaded on first use: only a cross-language question with
                # retrieval.query_translation="llm" calls it.
                retriever = make_retriever(
                    self.store(kb), embedder, self.settings.retrieval, generator=self.wait_generator
                )
                self._retrievers[kb] = retriever
            return retriever

    def pipeline(self, kb: str) -> Any:
        """The QAPipeline of `kb` (shares the cached store and retriever, and the queued LLM)."""
        from rag.pipeline import QAPipeline

        generator = self.wait_generator()
        embedder = self.wait_embedder()
        with self._lock:
            pipeline = self._pipelines.get(kb)
            if pipeline is None:
                pipeline = QAPipeline(self.store(kb), embedder, generator, self.settings, retriever=self.retriever(kb))
                self._pipelines[kb] = pipeline
            return pipeline

    def forget(self, kb: str) -> None:
        """Drop the cached objects of `kb` (after it was removed) and close its store."""
        with self._lock:
            self._retrievers.pop(kb, None)
            self._pipelines.pop(kb, None)
            store = self._stores.pop(kb, None)
        if store is not None:
            store.close()

    def kb_dir(self, kb: str) -> Path:
        return self.settings.paths.home / kb

    def files_dir(self, kb: str) -> Path:
        """Where uploads of `kb` are kept (the originals the page renderer reads)."""
        return self.kb_dir(kb) / "files"

    def remove_kb(self, kb: str) -> None:
        from rag.kb import remove_kb

        if self.jobs is not None:
            self.jobs.cancel_kb(kb)
        self.forget(kb)
        try:
            remove_kb(self.settings, kb)
        except KnowledgeBaseNotFound:
            raise kb_not_found(kb) from None
        shutil.rmtree(self.files_dir(kb), ignore_errors=True)

    # --- what clients may see ----------------------------------------------------------------------
    def _private_roots(self) -> list[str]:
        home = Path(self.settings.paths.home)
        roots = {str(home.absolute()), str(home.resolve())}
        return sorted((r for r in roots if len(r) > 1), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` without the server's own folders: a path under CITEQA_HOME becomes relative to it."""
        for root in self._private_roots():
            text = text.replace(root + os.sep, "").replace(root, "CITEQA_HOME")
        return text

    def public_path(self, path: str) -> str:
        """How an API response names a server file: relative to CITEQA_HOME (`kb/files/x.pdf`), else its name."""
        if not path:
            return path
        candidate = Path(path)
        for root in self._private_roots():
            try:
                return candidate.absolute().relative_to(root).as_posix()
            except ValueError:
                continue
        return candidate.name

    def ensure_jobs(self) -> JobManager:
        """The job manager (created once): it resumes the jobs a previous server left unfinished."""
        with self._lock:
            if self.jobs is None:
                from server.jobs import JobManager
                from server.jobstore import JobStore

                self.jobs = JobManager(
                    self.run_ingest,
                    JobStore(self.settings.paths.home),
                    metrics=self.metrics,
                    redact=self.redact,
                    keep_days=self.settings.server.jobs_keep_days,
                )
            return self.jobs

    def run_ingest(
        self,
        kb: str,
        paths: list[Path],
        *,
        replace: str | None,
        password: str | None,
        on_progress: Callable[[Any], None],
        cancel: threading.Event,
    ) -> IngestSummary:
        """One ingestion job (server.jobs.IngestFn): into `kb`'s cached store, with the ingestion embedder."""
        from ingest.pipeline import ingest_paths
        from rag.kb import check_indexing

        store = self.store(kb)
        # The cached store may have been opened for reading a KB chunked by older rules: writing needs
        # the running chunker's (IndexMismatch, 409, with how to re-index).
        check_indexing(store.manifest, self.settings, kb, writing=True)
        embedder = self.ingest_embedder()
        if replace is not None:  # a reingest starts over: unchanged content would be skipped
            try:
                store.remove_document(replace)
            except DocumentNotFound:
                pass  # removed by an earlier run of the same job, before a restart
        return ingest_paths(
            paths,
            store,
            embedder,
            self.settings,
            # One parser process unless configured: the server's cores also answer queries.
            workers=self.settings.ingest.workers or 1,
            on_progress=on_progress,
            cancel=cancel,
            password=password,
        )

    def close(self) -> None:
        self.answer_pool.shutdown(wait=False, cancel_futures=True)
        if self.jobs is not None:
            self.jobs.shutdown()
        with self._lock:
            names = list(self._stores)
        for name in names:
            self.forget(name)
