"""Server building blocks on their own: file names, the fair model queue, time limits, error mapping."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from rag import errors as E
from server.errors import status_for
from server.llm_queue import FairLock, QueuedGenerator, cancel_on
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


def test_fair_lock_cancel_gives_the_turn_away() -> None:
    lock = FairLock()
    assert lock.acquire()
    cancel = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(lock.acquire(cancel=cancel)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    cancel.set()
    waiter.join(2)
    assert result == [False] and time.monotonic() - started < 0.5
    lock.release()
    assert lock.acquire(timeout=1)  # the abandoned ticket does not block the next one
    lock.release()


class _Counting(_Echo):
    def __init__(self) -> None:
        self.calls = 0

    def generate(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().generate(messages, **kwargs)


@pytest.mark.parametrize("release_at_once", [False, True])
def test_cancelled_request_leaves_the_model_queue_without_running_it(release_at_once: bool) -> None:
    """release_at_once: the holder lets go right as the request is cancelled (its turn comes with the
    cancel, before its next look at it) - found by tests/test_sse_disconnect.py: it still ran the model."""
    inner = _Counting()
    gen = QueuedGenerator(inner)  # type: ignore[arg-type]
    assert gen.queue.acquire()  # another request holds the model
    cancel = threading.Event()
    errors: list[BaseException] = []

    def ask() -> None:
        with cancel_on(cancel):
            try:
                gen.generate([{"role": "user", "content": "x"}])
            except E.Cancelled as exc:
                errors.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    time.sleep(0.1)
    cancel.set()  # the request timed out (504) or its client went away
    if release_at_once:
        gen.queue.release()
    worker.join(2)
    assert len(errors) == 1 and inner.calls == 0
    if not release_at_once:
        gen.queue.release()
    assert gen.generate([{"role": "user", "content": "x"}]) == "one two three "  # the queue moves on


def test_cancel_stops_a_stream_before_the_next_piece() -> None:
    gen = QueuedGenerator(_Echo())  # type: ignore[arg-type]
    cancel = threading.Event()
    with cancel_on(cancel):
        stream = gen.generate([{"role": "user", "content": "x"}], stream=True)
        assert next(stream) == "one "  # type: ignore[call-overload]
        cancel.set()
        with pytest.raises(E.Cancelled):
            next(stream)  # type: ignore[call-overload]
    assert gen.queue.acquire(timeout=1)  # released at once
    gen.queue.release()


def _limited_app() -> FastAPI:
    from server.errors import install_error_handlers
    from server.middleware import BodyLimitMiddleware

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/v1/kbs/{kb}/documents")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyLimitMiddleware, default_bytes=1000, upload_bytes=5000)
    return app


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 100):
        yield b"x" * 100


@pytest.mark.parametrize(("path", "limit"), [("/v1/search", 1000), ("/v1/kbs/docs/documents", 5000)])
def test_request_bodies_are_limited_with_or_without_content_length(path: str, limit: int) -> None:
    with TestClient(_limited_app()) as client:
        assert client.post(path, content=b"x" * limit).json() == {"bytes": limit}
        declared = client.post(path, content=b"x" * (limit + 1))  # Content-Length says it: refused unread
        chunked = client.post(path, content=_chunks(limit + 100))  # no Content-Length: counted as it comes
        for r in (declared, chunked):
            assert r.status_code == 413, r.text
            assert r.json()["error"]["type"] == "PayloadTooLarge" and "MB" in r.json()["error"]["message"]
        assert "content-length" not in chunked.request.headers


def test_the_app_limits_json_bodies(tmp_path: Path) -> None:
    from rag.settings import load_settings
    from server.app import create_app
    from server.schemas import MAX_BODY_BYTES

    app = create_app(load_settings(overrides={"paths.home": tmp_path / "home", "embedder.name": "fake"}))
    client = TestClient(app)  # no lifespan: the middleware answers before any route or model
    r = client.post("/v1/search", content=_chunks(MAX_BODY_BYTES + 1000), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"


@pytest.mark.parametrize("files", [1, 50])
def test_a_chunked_upload_stops_at_the_upload_limit(tmp_path: Path, files: int) -> None:
    """files=1: the whole body's limit (2 MB) stops it; files=50: the body may be 51 MB, but this one file
    stops at its own 1 MB limit (it used to be spooled in full before its size was looked at)."""
    from rag.settings import load_settings
    from server.app import create_app

    home = tmp_path / "home"
    overrides = {
        "paths.home": home,
        "embedder.name": "fake",
        "server.max_upload_mb": 1,
        "server.max_upload_files": files,
    }
    client = TestClient(create_app(load_settings(overrides=overrides)))

    def body() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
        for _ in range(40):  # 40 MB offered: over both limits (1 file: 2 MB in all; 50 files: 1 MB each)
            yield b"x" * (1 << 20)
        yield b"\r\n--b--\r\n"

    r = client.post(
        "/v1/kbs/new/documents?create=true", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge", r.text
    if files == 50:
        assert r.json()["error"]["message"].startswith("big.txt: larger than the upload limit of 1 MB"), r.text
    assert not list(home.glob("**/big*.txt"))


def test_a_quote_found_in_fragments_is_marked_without_gaps_inside_a_line() -> None:
    """Regression: a quote not on the page verbatim was marked fragment by fragment (4 words each),
    leaving unmarked gaps between the fragments of one line."""
    import pymupdf

    from server.render import find_quote

    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((56, 100), "The company employs three hundred people in Suzhou and Berlin since the year 2019.")
    # Not verbatim on the page (the model quoted with a different last word), so fragments are searched.
    quads = find_quote(page, "The company employs three hundred people in Suzhou and Berlin since the start.")
    doc.close()
    assert len(quads) == 1, [q.rect for q in quads]  # one line, one mark
    assert quads[0].rect.width > 300  # it spans the fragments found, 'The company ... Berlin since'
