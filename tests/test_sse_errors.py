"""An LLM that fails mid-stream: the error arrives as an in-band event in the documented shape
(docs/server.md), on the REST ask route and the OpenAI chat route, after the tokens already sent.

The failing LLM is a backend registered by name in rag.llm.GENERATORS, the registry the app loads its
LLM from (`llm.name = "failing:<how>"`); the embedder is the fast 'fake' one. No model loads here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apihelp import wait_job
from conftest import FakeEmbedder
from fastapi.testclient import TestClient

from rag.errors import GenerationError
from rag.llm import GENERATORS
from rag.settings import load_settings
from server.app import create_app

PAGE = "Lumen Robotics reported revenue of 42 million dollars in 2024. The company shipped 4,820 robots."
QUESTION = "What revenue did Lumen Robotics report in 2024?"
SENT = "Lumen Robotics reported revenue of 42 million dollars in 2024"  # the checked sentence streamed first


class FailingGenerator:
    """Streams a sentence and a half, then fails: `typed` with a GenerationError (a backend that went away),
    `crash` with a bare RuntimeError (a bug: its text must not reach the client)."""

    context_tokens = 2048

    def __init__(self, how: str) -> None:
        self.how = how
        self.id = f"failing:{how}"

    def generate(self, messages: Any, *, stream: bool = False, **_: Any) -> str | Iterator[str]:
        if not stream:
            return ""  # rewrites / translations: nothing to say
        return self._pieces()

    def _pieces(self) -> Iterator[str]:
        yield "Lumen Robotics reported revenue of "
        yield "42 million dollars in 2024 [1]. "
        yield "The company also"
        if self.how == "typed":
            raise GenerationError("failing:typed: the LLM server closed the connection")
        raise RuntimeError("secret internal detail /etc/citeqa")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _client(tmp: Path, how: str) -> Iterator[TestClient]:
    settings = load_settings(
        overrides={
            "paths.home": tmp / "home",
            "embedder.name": "fake",
            "llm.name": f"failing:{how}",
            "retrieval.min_score": -1.0,  # the fake embedder's cosines are low: never refuse for that
            "retrieval.translate": False,
        }
    )
    with (
        GENERATORS.registered("failing", lambda argument, settings: FailingGenerator(argument)),
        TestClient(create_app(settings, embedder=FakeEmbedder())) as client,
    ):
        deadline = time.monotonic() + 30
        while not client.get("/readyz").json()["ready"] and time.monotonic() < deadline:
            time.sleep(0.02)  # the LLM loads through the registry in the app's loader thread
        assert client.get("/readyz").json()["llm"]["loaded"], client.get("/readyz").json()
        assert client.post("/v1/kbs", json={"name": "docs"}).status_code == 201
        r = client.post(
            "/v1/kbs/docs/documents", files=[("files", ("report.txt", PAGE.encode(), "text/plain"))], data={}
        )
        assert r.status_code == 202, r.text
        assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
        yield client


@pytest.fixture(params=["typed", "crash"])
def failing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, TestClient]]:
    yield from ((request.param, c) for c in _client(tmp_path, request.param))


def _events(raw: str) -> list[tuple[str, Any]]:
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def _expected_error(how: str) -> dict[str, Any]:
    if how == "typed":
        return {
            "type": "GenerationError",
            "message": "failing:typed: the LLM server closed the connection",
            "status": 502,
        }
    return {"type": "InternalError", "message": "internal server error (details are in the server log)", "status": 500}


def test_rest_ask_stream_ends_with_an_error_event(failing: tuple[str, TestClient]) -> None:
    how, client = failing
    with client.stream("POST", "/v1/ask", json={"question": QUESTION, "kb": "docs", "stream": True}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        events = _events("".join(s.iter_text()))
    kinds = [k for k, _ in events]
    # the tokens already sent stay sent; then one error event, and no citations/done after it
    assert "".join(d["text"] for k, d in events if k == "token").startswith(SENT), events
    assert kinds[-1] == "error" and kinds.count("error") == 1, kinds
    assert "citations" not in kinds and "done" not in kinds
    assert kinds.index("evidence") < kinds.index("token")
    assert events[-1][1] == {"error": _expected_error(how)}
    assert "secret" not in json.dumps(events)


def test_openai_chat_stream_ends_with_an_error_chunk_then_done(failing: tuple[str, TestClient]) -> None:
    how, client = failing
    body = {"model": "citeqa:docs", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        raw = "".join(s.iter_text())
    blocks = [b.removeprefix("data: ") for b in raw.strip().split("\n\n")]
    assert blocks[-1] == "[DONE]", blocks  # clients stop reading at [DONE], as with OpenAI servers
    chunks = [json.loads(b) for b in blocks[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if "choices" in c)
    assert text.startswith(SENT), chunks
    assert chunks[-1] == {"error": _expected_error(how)}  # in-band, like OpenAI's own streaming errors
    assert not any(c.get("choices", [{}])[0].get("finish_reason") == "stop" for c in chunks)
    assert "secret" not in raw


def test_the_failing_llm_is_gone_from_the_registry_after_the_app(tmp_path: Path) -> None:
    for _ in _client(tmp_path, "typed"):
        assert "failing" in GENERATORS
    assert "failing" not in GENERATORS
