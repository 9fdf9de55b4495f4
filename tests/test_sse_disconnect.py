"""The model is never spent on a request that is gone: a real uvicorn server on 127.0.0.1, real SmolLM2.

* a streaming client that reads one event and hangs up frees the model within a second (the next
  request in the queue gets it), for /v1/ask and /v1/chat/completions;
* a request that ran into the time limit (504) while waiting for the model never runs it afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_openai import live_app

from rag.settings import load_settings
from server.app import create_app

RELEASE_LIMIT_S = 1.0
TEXT = "Lumen Robotics reported revenue of 42 million dollars in 2024. The company employs 300 people in Suzhou."


class CountingGenerator:
    """The real generator, counting the calls that reach it (the model actually runs)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.id = inner.id
        self.context_tokens = inner.context_tokens
        self.calls: list[str] = []

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def generate(self, messages: list[Any], **kwargs: Any) -> Any:
        self.calls.append(str(messages[-1].get("content", ""))[-200:])
        return self.inner.generate(messages, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def _serve(root: Path, smollm: Any, timeout_s: float) -> Iterator[dict[str, Any]]:
    """A live server whose default KB 'docs' holds one text file; its generator counts model calls."""
    import httpx

    settings = load_settings(
        overrides={
            "paths.home": root / "home",
            "paths.default_kb": "docs",
            "embedder.name": "fake",
            "llm.name": "smollm2-135m",
            "llm.max_answer_tokens": 256,  # long enough that a hang-up comes mid-generation
            "llm.context_tokens": 2048,
            "llm.threads": 1,
            "retrieval.min_score": -1.0,
            "server.request_timeout_s": timeout_s,
        }
    )
    generator = CountingGenerator(smollm)
    app = create_app(settings, generator=generator)
    with live_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        r = client.post(
            "/v1/kbs/docs/documents?create=true", files=[("files", ("report.txt", TEXT.encode(), "text/plain"))]
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        yield {"base": base, "generator": generator, "app": app}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm: Any) -> Iterator[dict[str, Any]]:
    with _serve(tmp_path_factory.mktemp("sse"), smollm, timeout_s=120) as running:
        yield running


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory, smollm: Any) -> Iterator[dict[str, Any]]:
    """Its request time limit is 2 s."""
    with _serve(tmp_path_factory.mktemp("sse504"), smollm, timeout_s=2) as running:
        yield running


def _queue(server: dict[str, Any]) -> Any:
    """The app's model queue (the FairLock every generation waits in)."""
    return server["app"].state.citeqa.generator.queue


def _raw_request(base: str, path: str, body: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    data = body.encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes, limit_s: float = 120) -> bytes:
    seen = b""
    deadline = time.monotonic() + limit_s
    while marker not in seen:
        assert time.monotonic() < deadline, seen[-500:]
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before {marker!r}: {seen[-500:]!r}"
        seen += chunk
        if marker not in seen:
            assert b"event: done" not in seen and b"[DONE]" not in seen, f"the answer ended before {marker!r}: {seen!r}"
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body", "marker"),
    [
        # /v1/ask streams only checked sentences: a question the text plainly answers, so tokens come
        ("/v1/ask", '{"question": "What revenue did Lumen Robotics report in 2024?", "stream": true}', b"event: token"),
        (
            "/v1/chat/completions",
            '{"model": "citeqa:docs", "stream": true, "messages": [{"role": "user", '
            '"content": "How many people does Lumen Robotics employ?"}]}',
            b'"delta": {"content": "',
        ),
    ],
)
def test_hanging_up_mid_stream_frees_the_model_within_a_second(
    server: dict[str, Any], path: str, body: str, marker: bytes
) -> None:
    queue = _queue(server)
    sock = _raw_request(server["base"], path, body)
    _read_until(sock, marker)  # the model is generating for this client now
    calls = len(server["generator"].calls)
    sock.close()
    hung_up = time.monotonic()
    assert queue.acquire(timeout=10), "the model was not released"
    released = time.monotonic() - hung_up
    queue.release()
    print(f"\n{path}: model released {released * 1000:.0f} ms after the client hung up")
    assert released < RELEASE_LIMIT_S, f"{path}: the model was held {released:.2f} s after the client left"
    assert len(server["generator"].calls) == calls


@pytest.mark.slow
def test_a_request_that_timed_out_never_runs_the_model(impatient_server: dict[str, Any]) -> None:
    import httpx

    server = impatient_server
    queue = _queue(server)
    question = "Which cities does Lumen Robotics work in, timed out?"
    assert queue.acquire(timeout=30)  # another request holds the model past the time limit (2 s)
    try:
        r = httpx.post(f"{server['base']}/v1/ask", json={"question": question}, timeout=30)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["type"] == "Timeout"
    finally:
        queue.release()
    time.sleep(1.0)  # time enough for an abandoned request to reach the model, were it still queued
    assert queue.acquire(timeout=5)
    queue.release()
    assert not [c for c in server["generator"].calls if "timed out" in c], server["generator"].calls
