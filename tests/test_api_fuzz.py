"""Schemathesis over the app's own /openapi.json, in-process through the ASGI app.

Stateless: every operation gets a bounded number of generated requests (valid and invalid ones).
Stateful: the OpenAPI links (create a KB -> read, list, delete it; upload -> the job) chain calls.
Every response must be: not a 5xx, conformant to the schema (status code, content type, headers,
body), an accepted request when the schema says it is valid and a 4xx when it says it is not; every
error body has the documented shape `{"error": {"type", "message"}}`.

Real components: a knowledge base filled through the upload route, SmolLM2-135M answering the asks
that reach it (few tokens), the deterministic 'fake' embedder (the embedder is not what is fuzzed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from pdfgen import make_pdf
from schemathesis.config import SchemathesisConfig

from rag.settings import Settings, load_settings
from server.app import create_app

MAX_EXAMPLES = 25
MAX_EXAMPLES_LLM = 2
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure here is reproducible, not flaky
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)


STATUSES: Counter[int] = Counter()  # every response checked, by status (the figures the issue asks for)


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx JSON body is the documented error envelope."""
    STATUSES[response.status_code] += 1
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str)):
        raise AssertionError(f"{response.status_code} body is not {{'error': {{'type', 'message'}}}}: {body!r}")
    return None


class AppUnderTest:
    """The ASGI app schemathesis calls: the module fixture plugs in the real app (with its data).

    The schema has to exist when pytest collects (schemathesis' own fixture loader does not work with
    pytest 9), the app with its knowledge base only once the fixture runs. The app's lifespan is the
    fixture's (one per module): schemathesis starts and stops one around every test, answered here."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.app is not None, "the api fixture has not started the app"
        await self.app(scope, receive, send)


APP = AppUnderTest()
SPEC = create_app(Settings()).openapi()  # the same for every settings (the fixture checks it)
CONFIG: dict[str, Any] = {
    "request-timeout": 180,  # an ask on a busy 2-core machine
    # The OpenAPI links say which response value feeds which call; guessing from names and shapes
    # (dependency analysis) took an upload's job id for a document id.
    "phases": {"stateful": {"inference": {"algorithms": ["location-headers"]}}},
    "operations": [
        {
            # The one rule a JSON schema cannot state: the last message is the user's question (else 400).
            "include-path": "/v1/chat/completions",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 404]}},
        }
    ],
}
LLM_ROUTES = r"^/v1/(ask|chat/completions)$"  # each valid request runs the model: fewer examples
NOT_LLM_ROUTES = r"^(?!/v1/(ask|chat/completions)$)"


def _schema(*, llm: bool) -> Any:
    loaded = schemathesis.openapi.from_dict(SPEC, config=SchemathesisConfig.from_dict(CONFIG))  # one each
    # `exclude` both ways: `include` on a schema whose config lists operations keeps every operation
    loaded = loaded.exclude(path_regex=NOT_LLM_ROUTES if llm else LLM_ROUTES)
    loaded.app = APP
    return loaded


schema, llm_schema = _schema(llm=False), _schema(llm=True)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, smollm: Any) -> Iterator[None]:
    root = tmp_path_factory.mktemp("fuzz")
    app_settings = load_settings(
        overrides={
            "paths.home": root / "home",
            "paths.default_kb": "docs",  # asks without `kb` reach a real KB and the model
            "embedder.name": "fake",
            "llm.name": "smollm2-135m",
            "llm.max_answer_tokens": 16,
            "llm.context_tokens": 2048,
            "llm.context_budget": 200,  # a short prompt: the asks here test the API, not the answers
            "llm.threads": 1,
            "retrieval.min_score": -1.0,
            "server.request_timeout_s": 150,
        }
    )
    app = create_app(app_settings, generator=smollm)
    assert app.openapi() == SPEC
    APP.app = app
    pdf = make_pdf(root / "report.pdf", ["Lumen Robotics reported revenue of 42 million dollars in 2024."])
    with TestClient(app) as client:  # the app's lifespan, for the whole module
        base = ""
        r = client.post(
            f"{base}/v1/kbs/docs/documents?create=true",
            files=[("files", ("report.pdf", pdf.read_bytes(), "application/pdf"))],
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"{base}/v1/jobs/{job_id}").json())["state"] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        deadline = time.monotonic() + 60
        while client.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "models did not load"
            time.sleep(0.1)
        try:
            yield
        finally:
            APP.app = None
            server_errors = sum(n for status, n in STATUSES.items() if status >= 500)
            print(
                f"\nschemathesis: {sum(STATUSES.values())} responses, {server_errors} 5xx, {dict(sorted(STATUSES.items()))}"
            )


@pytest.mark.timeout(300)
@schema.parametrize()
@HYPOTHESIS
def test_stateless(api: None, case: Any) -> None:
    case.call_and_validate()


@pytest.mark.timeout(300)
@llm_schema.parametrize()
@settings(HYPOTHESIS, max_examples=MAX_EXAMPLES_LLM)
def test_stateless_llm_routes(api: None, case: Any) -> None:
    case.call_and_validate()


@pytest.mark.timeout(300)
def test_stateful(api: None) -> None:
    machine = schema.as_state_machine()
    machine.run(settings=settings(HYPOTHESIS, max_examples=10, stateful_step_count=6))
