"""Server building blocks on their own: file names, the fair model queue, time limits, error mapping."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rag import errors as E
from server.errors import status_for
from server.llm_queue import FairLock, QueuedGenerator
from server.middleware import TimeoutMiddleware
from server.uploads import check_extension, sanitize_filename, save_upload


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("..\\..\\windows\\win.ini.pdf", "win.ini.pdf"),
        ("年度报告 2024.pdf", "年度报告 2024.pdf"),
        ("a\x00b<c>|d.pdf", "ab_c_d.pdf"),
        ("..", "upload"),
        (".hidden.pdf", "hidden.pdf"),
        ("", "upload"),
        ("x" * 400 + ".pdf", "x" * 176 + ".pdf"),
    ],
)
def test_sanitize_filename(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


def test_extension_and_size_checks(tmp_path: Path) -> None:
    assert check_extension("A.PDF", {".pdf"}) == ".pdf"
    with pytest.raises(E.UnsupportedFormat):
        check_extension("run.sh", {".pdf", ".txt"})
    saved = save_upload(io.BytesIO(b"x" * 10), "../a.txt", "a.txt", tmp_path / "files", max_bytes=10)
    assert saved.path == (tmp_path / "files" / "a.txt").resolve() and saved.bytes == 10
    with pytest.raises(E.PayloadTooLarge):
        save_upload(io.BytesIO(b"x" * 11), "b.txt", "b.txt", tmp_path / "files", max_bytes=10)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["a.txt"]  # no temp file left behind
    with pytest.raises(E.InvalidRequest):
        save_upload(io.BytesIO(b"x"), "../x.txt", "../x.txt", tmp_path / "files", max_bytes=10)
    # A taken name is never overwritten (a second, different a.txt would replace the first document).
    again = [save_upload(io.BytesIO(b"y"), "a.txt", "a.txt", tmp_path / "files", max_bytes=10) for _ in range(2)]
    assert [s.name for s in again] == ["a-2.txt", "a-3.txt"] and again[0].path.read_bytes() == b"y"
    assert saved.path.read_bytes() == b"x" * 10


def test_error_status_mapping() -> None:
    assert status_for(E.KnowledgeBaseNotFound("x")) == 404
    assert status_for(E.DocumentNotFound("x")) == 404
    assert status_for(E.KnowledgeBaseExists("x")) == 409
    assert status_for(E.EmbedderMismatch("x")) == 409
    assert status_for(E.PayloadTooLarge("x")) == 413  # before its parent InvalidRequest
    assert status_for(E.InvalidRequest("x")) == 400
    assert status_for(E.Unauthorized("x")) == 401
    assert status_for(E.UnsupportedFormat("a.exe", "no")) == 415
    assert status_for(E.EncryptedDocument("a.pdf", "password")) == 422
    assert status_for(E.ModelNotAvailable("x")) == 503
    assert status_for(E.GenerationError("x")) == 502
    assert status_for(E.EmbeddingError("x")) == 502
    assert status_for(RuntimeError("boom")) == 500


def test_fair_lock_serves_in_arrival_order() -> None:
    lock = FairLock()
    lock.acquire()
    order: list[int] = []
    threads = []
    for i in range(6):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while lock.waiting < i + 1 and time.monotonic() < deadline:  # queue them one by one
            time.sleep(0.001)
    assert lock.waiting == 6
    lock.release()
    for t in threads:
        t.join(5)
    assert order == list(range(6))


def test_fair_lock_timeout_gives_the_turn_away() -> None:
    lock = FairLock()
    lock.acquire()
    assert lock.acquire(timeout=0.05) is False
    done = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), done.set())).start()
    time.sleep(0.05)
    lock.release()
    assert done.wait(2)


class _Echo:
    id = "echo"
    context_tokens = 512

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages, *, stream=False, max_tokens=384, temperature=0.1, stop=None):  # type: ignore[no-untyped-def]
        words = ["one ", "two ", "three "]
        return iter(words) if stream else "".join(words)


def test_queued_generator_meters_and_releases() -> None:
    seen: list[tuple[int, float]] = []
    gen = QueuedGenerator(_Echo(), on_generation=lambda n, s: seen.append((n, s)))  # type: ignore[arg-type]
    assert gen.generate([{"role": "user", "content": "x"}]) == "one two three "
    stream = gen.generate([{"role": "user", "content": "x"}], stream=True)
    assert next(stream) == "one "  # type: ignore[call-overload]
    stream.close()  # type: ignore[union-attr]  # a client that goes away frees the model
    assert gen.queue.acquire(timeout=1)
    gen.queue.release()
    assert [n for n, _ in seen] == [3, 1]


def test_timeout_middleware_answers_504() -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"ok": "late"}

    @app.get("/fast")
    async def fast() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(TimeoutMiddleware, timeout_s=0.2)
    with TestClient(app) as client:
        r = client.get("/slow")
        assert r.status_code == 504 and r.json()["error"]["type"] == "Timeout"
        assert client.get("/fast").json() == {"ok": "yes"}


class _SlowPipeline:
    """Yields pieces until told to stop; records whether its generator was closed (model released)."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.pieces = 0

    def ask_stream(self, question, history=None, flt=None):  # type: ignore[no-untyped-def]
        try:
            while True:
                self.pieces += 1
                yield f"piece{self.pieces} "
                time.sleep(0.01)
        finally:
            self.closed.set()


def test_abandoned_stream_stops_the_generation() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from server.answering import stream_answer

    pipeline = _SlowPipeline()

    async def consume_two() -> list[str]:
        out: list[str] = []
        stream = stream_answer(pipeline, "q", history=None, flt=None, executor=pool)
        async for item in stream:
            out.append(str(item))
            if len(out) == 2:
                break
        await stream.aclose()  # what Starlette does when the client goes away
        return out

    with ThreadPoolExecutor(2) as pool:
        assert asyncio.run(consume_two()) == ["piece1 ", "piece2 "]
        assert pipeline.closed.wait(5)
    assert pipeline.pieces < 50
