"""Ingestion jobs survive restarts (issue 17 item 1): the jobs database, paging, expiry, and real
`citeqa serve` processes killed (SIGKILL) or stopped (SIGTERM) mid-job, then started again."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FakeEmbedder
from fastapi.testclient import TestClient
from pdfgen import make_pdf

from ingest.pipeline import IngestSummary
from rag.kb import open_kb
from rag.settings import load_settings
from server.app import create_app
from server.jobs import JobManager
from server.jobstore import FILE_NAME, Job, JobStore, new_owner, owner_is_gone
from server.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
CITEQA = Path(sys.executable).parent / "citeqa"
DAY = 86400.0
N_FILES = 6


# --- the jobs database -------------------------------------------------------------------------------
def _summary(added: int = 1) -> IngestSummary:
    return IngestSummary(added=[f"f{i}" for i in range(added)])


def instant_ingest(kb: str, paths: list[Path], **_: Any) -> IngestSummary:
    """Stands in for AppState.run_ingest where only the manager's bookkeeping is under test."""
    return _summary(len(paths))


def manager(home: Path, ingest: Callable[..., IngestSummary] = instant_ingest, **kw: Any) -> JobManager:
    return JobManager(ingest, JobStore(home), metrics=Metrics(), **kw)


def finished_row(job_id: str, kb: str, ended: float, state: str = "succeeded") -> dict[str, Any]:
    job = Job(id=job_id, kb=kb, paths=["/x/a.pdf"], state=state, created_at=ended - 1, finished_at=ended)
    return job.row(new_owner())


def test_jobs_database_is_private_wal_and_keeps_jobs_across_managers(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    job = jobs.submit("kb", [tmp_path / "a.pdf", tmp_path / "b.pdf"], password="secret")
    assert jobs.wait(job.id, 10).state == "succeeded"
    jobs.shutdown()
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert "secret" not in repr(db.execute("SELECT * FROM jobs").fetchall())  # passwords are never written
    for extra in ("-wal", "-shm"):
        side = path.with_name(FILE_NAME + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600
    again = manager(tmp_path)  # a new process's manager: the finished job is still there
    try:
        found = again.get(job.id)
        assert found.state == "succeeded" and found.summary is not None and found.summary["added"] == 2
        assert found.to_dict()["files"] == ["a.pdf", "b.pdf"] and found.resumed == 0
    finally:
        again.shutdown()


def test_listing_pages_newest_first_with_filters(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    try:
        ids = [jobs.submit("a" if i % 2 else "b", [tmp_path / f"{i}.txt"]).id for i in range(7)]
        for job_id in ids:
            jobs.wait(job_id, 10)
        newest_first = ids[::-1]
        seen: list[str] = []
        offset = 0
        while True:
            page, total = jobs.list(limit=3, offset=offset)
            assert total == 7
            seen += [j.id for j in page]
            offset += len(page)
            if not page or offset >= total:
                break
        assert seen == newest_first
        page, total = jobs.list("a", limit=10)
        assert total == 3 and [j.id for j in page] == [i for i in newest_first if ids.index(i) % 2]
        assert jobs.list(kbs={"b"}, limit=2)[1] == 4 and len(jobs.list(kbs={"b"}, limit=2)[0]) == 2
        assert jobs.list(kbs=set())[1] == 0  # a key scoped to no KB with jobs sees none
        assert jobs.list(state="failed")[1] == 0 and jobs.list(state="succeeded")[1] == 7
    finally:
        jobs.shutdown()


def test_finished_jobs_expire_at_start_and_periodically(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    now = time.time()
    store.save(finished_row("old", "kb", now - 8 * DAY))
    store.save(finished_row("recent", "kb", now - 6 * DAY))
    store.close()
    jobs = manager(tmp_path, keep_days=7, tick_s=0.1)
    try:
        with pytest.raises(Exception, match="no ingestion job 'old'.*7 days"):
            jobs.get("old")
        assert jobs.get("recent").state == "succeeded"
        # While the server runs: a job that passes the age goes at the next tick.
        jobs._store.save(finished_row("aging", "kb", time.time() - 7 * DAY - 0.5))
        deadline = time.monotonic() + 5
        while jobs._store.get("aging") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert jobs._store.get("aging") is None
        assert jobs.get("recent").state == "succeeded"
    finally:
        jobs.shutdown()


def test_expiry_age_is_a_server_setting() -> None:
    assert load_settings().server.jobs_keep_days == 7
    assert load_settings(overrides={"server.jobs_keep_days": 0.5}).server.jobs_keep_days == 0.5


def test_owner_liveness() -> None:
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    now = time.time()
    assert not owner_is_gone(f"{host}:{os.getppid()}", now, stale_s=60)  # a live process on this host
    assert owner_is_gone(f"{host}:{child.pid}", now, stale_s=60)  # a dead one
    assert owner_is_gone(f"{host}:{os.getpid()}", now, stale_s=60)  # an earlier process with our pid
    assert not owner_is_gone("elsewhere:1", now - 10, stale_s=60, now=now)  # another host, heard from lately
    assert owner_is_gone("elsewhere:1", now - 61, stale_s=60, now=now)


def test_a_crashed_servers_jobs_are_resumed_and_a_live_ones_are_not(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    rows = {
        "crashed": ("running", f"{host}:{dead.pid}", False),
        "waiting": ("queued", f"{host}:{dead.pid}", False),
        "stopped": ("interrupted", f"{host}:{dead.pid}", False),
        "unwanted": ("running", f"{host}:{dead.pid}", True),  # cancelled by a client before the crash
        "elsewhere": ("running", f"{host}:{os.getppid()}", False),  # its server still runs
    }
    for job_id, (state, owner, cancelled) in rows.items():
        job = Job(id=job_id, kb="kb", paths=[f"/x/{job_id}.pdf"], state=state, cancel_requested=cancelled)
        store.save(job.row(owner))
    store.close()
    ran: list[list[str]] = []

    def ingest(kb: str, paths: list[Path], **_: Any) -> IngestSummary:
        ran.append([p.name for p in paths])
        return _summary(len(paths))

    jobs = manager(tmp_path, ingest)
    try:
        for job_id in ("crashed", "waiting", "stopped"):
            job = jobs.wait(job_id, 10)
            assert job.state == "succeeded" and job.resumed == 1, job
        assert sorted(ran) == [["crashed.pdf"], ["stopped.pdf"], ["waiting.pdf"]]
        assert jobs.get("unwanted").state == "cancelled"
        assert jobs.get("elsewhere").state == "running"  # not ours to take
    finally:
        jobs.shutdown()


def test_shutdown_interrupts_the_running_job_after_the_document_in_hand(tmp_path: Path) -> None:
    started = threading.Event()
    done_docs: list[str] = []

    def ingest(kb: str, paths: list[Path], *, cancel: threading.Event, **_: Any) -> IngestSummary:
        for p in paths:  # like the pipeline: the cancel event is checked between documents
            if cancel.is_set():
                break
            started.set()
            time.sleep(0.2)
            done_docs.append(p.name)
        return IngestSummary(added=list(done_docs), cancelled=cancel.is_set())

    jobs = manager(tmp_path, ingest)
    running = jobs.submit("kb", [tmp_path / f"{i}.pdf" for i in range(20)])
    waiting = jobs.submit("kb", [tmp_path / "later.pdf"])
    assert started.wait(10)
    jobs.shutdown(timeout=10)
    assert 1 <= len(done_docs) < 20
    store = JobStore(tmp_path)
    try:
        assert store.get(running.id)["state"] == "interrupted"  # type: ignore[index]
        assert store.get(waiting.id)["state"] == "interrupted"  # type: ignore[index]
    finally:
        store.close()
    # A job submitted while the server stops is recorded for the next start, not refused and not lost.
    late = jobs.submit("kb", [tmp_path / "late.pdf"])
    assert late.state == "interrupted"


# --- real servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `citeqa serve` process on 127.0.0.1 with its own CITEQA_HOME (the real embedder, SmolLM2)."""

    def __init__(self, home: Path, log: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "CITEQA_HOME": str(home),
            "CITEQA_PORT": str(self.port),
            "CITEQA_LLM": "smollm2-135m",
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("CITEQA_API_KEYS", None)
        self._log_path = log
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            [str(CITEQA), "serve"],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill takes its parser workers too
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.2)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job) or time.monotonic() > deadline:
                return job
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> bool:
        """Signal the server and wait for it; True when it exited cleanly (for SIGTERM: after a complete
        shutdown, uvicorn re-raising the signal so the exit status says what stopped it)."""
        self.http.close()
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
            return rc in (0, -signal.SIGTERM) and b"Application shutdown complete" in self._log_path.read_bytes()
        finally:
            self._log.close()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # nothing of it outlives the test
            except ProcessLookupError:
                pass


def make_corpus(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    out = []
    for i in range(n):
        pages = [
            f"Report {i}, part {p + 1}.\n\n"
            + " ".join(
                f"Unit {i}-{p}-{k} shipped {k * 13 + i} crates to harbour {k % 7} on day {k}." for k in range(30)
            )
            + f"\n\n第{i}号报告第{p + 1}部分：本期营业收入同比增长{i + p}%。"
            for p in range(1)
        ]
        out.append(make_pdf(folder / f"report_{i:02d}.pdf", pages))
    return out


def upload(server: Server, files: list[Path]) -> dict[str, Any]:
    r = server.http.post(
        "/v1/kbs/kb/documents",
        files=[("files", (f.name, f.read_bytes(), "application/pdf")) for f in files],
        data={"create": "true"},
    )
    assert r.status_code == 202, r.text
    return r.json()["job"]  # type: ignore[no-any-return]


def kb_contents(home: Path) -> dict[str, tuple[str, int]]:
    """{doc id: (sha256, chunks)} of the KB 'kb' under `home`, read through the Store protocol."""
    store = open_kb(load_settings(overrides={"paths.home": home}), "kb")
    try:
        return {d.id: (d.sha256, d.chunks) for d in store.list_documents()}
    finally:
        store.close()


def kb_progress(home: Path) -> tuple[int, int, int]:
    """(documents, chunks with a vector, chunks) of the KB 'kb' under `home`."""
    store = open_kb(load_settings(overrides={"paths.home": home}), "kb")
    try:
        return len(store.list_documents()), *store.embedding_counts()
    finally:
        store.close()


def unfinished(home: Path) -> bool:
    """Whether the KB holds part of the job: some documents, and either not all of them or not all vectors
    (documents are written before their vectors, so a kill often lands in the embedding phase)."""
    documents, embedded, chunks = kb_progress(home)
    return 0 < documents and (documents < N_FILES or embedded < chunks)


def fully_embedded(home: Path) -> bool:
    _, embedded, chunks = kb_progress(home)
    return embedded == chunks > 0


def db_state(home: Path, job_id: str) -> str:
    with sqlite3.connect(home / FILE_NAME) as db:
        return str(db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Path], dict[str, tuple[str, int]]]]:
    """Six one-page PDFs (two chunks each), and what a clean, uninterrupted server run makes of them."""
    root = tmp_path_factory.mktemp("jobs")
    files = make_corpus(root / "docs", N_FILES)
    home = root / "clean"
    server = Server(home, root / "clean.log")
    try:
        job = server.wait_job(upload(server, files)["id"], lambda j: j["state"] not in {"queued", "running"}, 240)
        assert job["state"] == "succeeded" and job["summary"]["added"] == N_FILES, job
    finally:
        assert server.stop(signal.SIGTERM)
    clean = kb_contents(home)
    assert len(clean) == N_FILES
    yield files, clean


def mid_job(job: dict[str, Any]) -> bool:
    return job["state"] != "running" or job["progress"].get("files_done", 0) >= 2


@pytest.mark.slow
def test_sigkill_mid_job_then_restart_resumes_it_to_a_clean_runs_kb(
    tmp_path: Path, corpus: tuple[list[Path], dict[str, tuple[str, int]]]
) -> None:
    files, clean = corpus
    home, log = tmp_path / "home", tmp_path / "server.log"
    server = Server(home, log)
    job_id = upload(server, files)["id"]
    seen = server.wait_job(job_id, lambda j: j["state"] in {"running", "succeeded", "failed"}, 120)
    seen = server.wait_job(job_id, mid_job, 120)
    assert seen["state"] == "running", seen  # killed mid-job, not after it
    server.stop(signal.SIGKILL)
    assert db_state(home, job_id) == "running"  # as the crash left it
    partial = kb_contents(home)
    assert unfinished(home) and all(clean[d] == v for d, v in partial.items())  # whole documents only

    server = Server(home, log)
    try:
        job = server.wait_job(job_id, lambda j: j["state"] in {"succeeded", "failed", "cancelled"}, 240)
        assert job["state"] == "succeeded" and job["resumed"] == 1, job
        summary = job["summary"]
        assert summary["failed"] == [] and summary["added"] + summary["skipped"] == N_FILES, summary
        assert summary["skipped"] >= len(partial)  # what was written before the kill is not redone
        listed = server.http.get("/v1/jobs", params={"kb": "kb"}).json()
        assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["total"] == 1
    finally:
        assert server.stop(signal.SIGTERM)
    assert kb_contents(home) == clean  # the same doc ids and chunk counts as the clean run
    assert fully_embedded(home)  # and the resumed job finished the vectors the kill left queued
    assert not [p for p in (home / "kb" / "files").iterdir() if p.name.startswith(".upload-")]


@pytest.mark.slow
def test_sigterm_mid_job_marks_it_interrupted_and_the_next_start_finishes_it(
    tmp_path: Path, corpus: tuple[list[Path], dict[str, tuple[str, int]]]
) -> None:
    files, clean = corpus
    home, log = tmp_path / "home", tmp_path / "server.log"
    server = Server(home, log)
    job_id = upload(server, files)["id"]
    seen = server.wait_job(job_id, mid_job, 120)
    assert seen["state"] == "running", seen
    t0 = time.monotonic()
    assert server.stop(signal.SIGTERM)  # a clean exit, within the file in hand
    stop_s = time.monotonic() - t0
    assert stop_s < 30, stop_s
    assert db_state(home, job_id) == "interrupted"
    # What was written before the stop stays (documents are written first, so often all of them, with the
    # embedding cut between batches: the resumed job then only embeds).
    assert kb_contents(home)

    server = Server(home, log)
    try:
        job = server.wait_job(job_id, lambda j: j["state"] in {"succeeded", "failed", "cancelled"}, 240)
        assert job["state"] == "succeeded" and job["resumed"] == 1 and job["summary"]["failed"] == [], job
    finally:
        assert server.stop(signal.SIGTERM)
    assert kb_contents(home) == clean and fully_embedded(home)


# --- the HTTP surface --------------------------------------------------------------------------------
class StubGenerator:
    id = "stub"
    context_tokens = 2048

    def generate(self, messages: Any, **_: Any) -> str:
        return "unused"

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_jobs_route_pages_and_checks_its_parameters(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={"paths.home": tmp_path / "home", "embedder.name": "fake", "llm.name": "smollm2-135m"}
    )
    with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=StubGenerator())) as client:
        ids = []
        for i in range(3):
            r = client.post(
                "/v1/kbs/notes/documents",
                files=[("files", (f"n{i}.md", f"# Note {i}\n\nShipment {i} left port.".encode(), "text/markdown"))],
                data={"create": "true"},
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["job"]["id"])
        first = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["jobs"]] == ids[:0:-1] and first["total"] == 3 and first["next_offset"] == 2
        rest = client.get("/v1/jobs", params={"limit": 2, "offset": first["next_offset"]}).json()
        assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next_offset"] is None
        assert client.get("/v1/jobs", params={"kb": "other"}).json()["total"] == 0
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 10**20}, {"state": "done"}):
            r = client.get("/v1/jobs", params=bad)
            assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidRequest", (bad, r.text)
        assert client.get("/v1/jobs/nope").status_code == 404


def test_a_finished_job_is_still_there_after_the_app_restarts(tmp_path: Path) -> None:
    """Regression (issue 17 item 6): after a restart a job was gone (404)."""
    settings = load_settings(
        overrides={"paths.home": tmp_path / "home", "embedder.name": "fake", "llm.name": "smollm2-135m"}
    )
    with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=StubGenerator())) as client:
        r = client.post(
            "/v1/kbs/notes/documents",
            files=[("files", ("n.md", b"# Note\n\nShipment 7 left port.", "text/markdown"))],
            data={"create": "true"},
        )
        job_id = r.json()["job"]["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{job_id}").json()["state"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
    with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=StubGenerator())) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["summary"]["added"] == 1 and job["files"] == ["n.md"], job
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job_id]
