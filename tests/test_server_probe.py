"""Regressions from the adversarial probe of the REST API (issue 17, item 6): jobs, uploads, paths, docs.

The app runs with the 'fake' embedder and a stub LLM passed in (no model loads): none of these
tests asks a question. Each test names the defect it guards against.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apihelp import wait_job
from conftest import FakeEmbedder
from fastapi.testclient import TestClient
from pdfgen import make_encrypted_pdf, make_pdf

from rag.settings import Settings, load_settings
from server.app import create_app


class StubGenerator:
    """Never called here: the tests only need an app whose LLM counts as loaded."""

    id = "stub"
    context_tokens = 2048

    def generate(self, messages: Any, **_: Any) -> str:
        return "unused"

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def make_settings(home: Path, **overrides: Any) -> Settings:
    return load_settings(
        overrides={"paths.home": home, "embedder.name": "fake", "llm.name": "smollm2-135m", **overrides}
    )


def upload(client: TestClient, kb: str, files: list[tuple[str, bytes]], **form: str) -> dict[str, Any]:
    r = client.post(
        f"/v1/kbs/{kb}/documents", files=[("files", (n, b, "application/octet-stream")) for n, b in files], data=form
    )
    assert r.status_code == 202, r.text
    return wait_job(client, r.json()["job"]["id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("probe")
    settings = make_settings(root / "home")
    app = create_app(settings, embedder=FakeEmbedder(), generator=StubGenerator())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/kbs", json={"name": "docs"}).status_code == 201
        yield {"client": client, "settings": settings, "root": root, "home": str(Path(settings.paths.home).resolve())}


# --- 1. a job whose every file failed ----------------------------------------------------------------
def test_job_whose_every_file_failed_reports_failed(world: dict[str, Any]) -> None:
    """Regression: a job where no file could be ingested reported `succeeded`."""
    client: TestClient = world["client"]
    job = upload(client, "docs", [("broken.pdf", b"%PDF-1.4\nnot really a pdf\n")])
    assert job["state"] == "failed", job
    assert job["files_failed"] == 1 and job["progress"]["ratio"] == 1.0
    assert job["error"].startswith("broken.pdf: "), job["error"]

    two = upload(client, "docs", [("bad-a.pdf", b"%PDF-1.4\nbroken a\n"), ("bad-b.pdf", b"%PDF-1.4\nbroken b\n")])
    assert two["state"] == "failed" and two["files_failed"] == 2
    assert two["error"].startswith("all 2 files failed; the first: bad-a.pdf: "), two["error"]

    mixed = upload(
        client, "docs", [("fine.txt", b"Lumen Robotics employs 300 people."), ("worse.pdf", b"%PDF-1.4\nnope\n")]
    )
    assert mixed["state"] == "succeeded" and mixed["files_failed"] == 1 and mixed["error"] is None
    assert mixed["summary"]["added"] == 1
    assert [f["path"] for f in mixed["summary"]["failed"]] == ["worse.pdf"]
    assert mixed["summary"]["failed"][0]["error"].startswith("worse.pdf: ")
    assert 'citeqa_ingest_jobs_total{state="failed"} 2.0' in client.get("/metrics").text


# --- 2. create=true as a query parameter -------------------------------------------------------------
def test_create_is_accepted_as_query_parameter_and_documented(world: dict[str, Any]) -> None:
    """Regression: `?create=true` gave 404 (only the multipart form field worked), and the docs said neither."""
    client: TestClient = world["client"]
    files = [("files", ("q.txt", b"Created through the query string.", "text/plain"))]
    assert client.post("/v1/kbs/by-query/documents?create=false", files=files).status_code == 404
    r = client.post("/v1/kbs/by-query/documents?create=true", files=files)
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
    for not_a_boolean in ("yes", "0", "{}"):  # the schema says boolean: no silent `false` (found by schemathesis)
        r = client.post("/v1/kbs/by-form/documents", files=files, data={"create": not_a_boolean})
        assert r.status_code == 400 and "create" in r.json()["error"]["message"], r.text
    r = client.post("/v1/kbs/by-form/documents", files=files, data={"create": "true"})
    assert r.status_code == 202 and wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
    op = client.get("/openapi.json").json()["paths"]["/v1/kbs/{kb}/documents"]["post"]
    assert "?create=true" in op["description"] and "form field" in op["description"]
    assert any(p["name"] == "create" and p["in"] == "query" for p in op["parameters"])
    for kb in ("by-query", "by-form"):
        assert client.delete(f"/v1/kbs/{kb}").status_code == 200


# --- 3. server paths ---------------------------------------------------------------------------------
def test_no_server_paths_in_kbs_documents_jobs_or_errors(world: dict[str, Any]) -> None:
    """Regression: error bodies, /v1/kbs (`path`), documents (`source`) and job failures showed server paths."""
    client: TestClient = world["client"]
    home = world["home"]
    job = upload(client, "docs", [("leaky.pdf", b"%PDF-1.4\nbroken\n"), ("ok.md", b"# Notes\n\nPaths stay private.")])
    assert home not in json.dumps(job) and job["summary"]["failed"][0]["path"] == "leaky.pdf"
    assert job["progress"].get("current", "") in {"", "leaky.pdf", "ok.md"}

    listing = client.get("/v1/kbs")
    assert listing.status_code == 200 and home not in listing.text
    assert "path" not in listing.json()["kbs"][0]
    docs = client.get("/v1/kbs/docs/documents")
    assert home not in docs.text
    doc = next(d for d in docs.json()["documents"] if d["name"] == "ok.md")
    assert doc["source"] == "docs/files/ok.md" and doc["paths"] in ([], ["docs/files/ok.md"])

    # Reingest once the original file is gone: the message names the file, not where it was.
    (Path(home) / doc["source"]).unlink()
    r = client.post(f"/v1/kbs/docs/documents/{doc['id']}/reingest")
    assert r.status_code == 404 and "(ok.md)" in r.json()["error"]["message"] and home not in r.text

    # Any error that carries a path under CITEQA_HOME (here: an unreadable manifest) comes out without it.
    broken = Path(home) / "broken-kb"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    r = client.get("/v1/kbs/broken-kb")
    assert r.status_code >= 400 and home not in r.text
    assert r.json()["error"]["message"].startswith("broken-kb/manifest.json: "), r.text
    r = client.get("/v1/kbs")  # the broken KB is listed with its error; the others still are
    assert r.status_code == 200 and home not in r.text
    listed = {k["name"]: k for k in r.json()["kbs"]}
    assert listed["broken-kb"]["error"].startswith("KnowledgeBaseError: broken-kb/manifest.json: ")
    assert listed["docs"]["documents"] >= 1
    import shutil

    shutil.rmtree(broken)


# --- 4. page PNG without ?kb= -------------------------------------------------------------------------
def test_page_png_finds_the_documents_kb(world: dict[str, Any]) -> None:
    """Regression: without `?kb=` the page route looked only in `default`: a citation's doc_id gave 404."""
    client: TestClient = world["client"]
    pdf = make_pdf(world["root"] / "atlas.pdf", ["Atlas Shipping moved 9 million containers in 2023."])
    r = client.post(
        "/v1/kbs/shipping/documents",
        files=[("files", ("atlas.pdf", pdf.read_bytes(), "application/pdf"))],
        data={"create": "true"},
    )
    assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
    doc_id = client.get("/v1/kbs/shipping/documents").json()["documents"][0]["id"]

    r = client.get(f"/v1/documents/{doc_id}/pages/1.png", params={"highlight": "9 million containers"})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG" and int(r.headers["x-highlight-matches"]) >= 1
    assert client.get(f"/v1/documents/{doc_id}/pages/1.png", params={"kb": "shipping"}).status_code == 200
    r = client.get(f"/v1/documents/{doc_id}/pages/1.png", params={"kb": "docs"})  # named: only that KB
    assert r.status_code == 404 and r.json()["error"]["type"] == "DocumentNotFound"
    r = client.get("/v1/documents/0123456789abcdef/pages/1.png")
    assert r.status_code == 404 and "any knowledge base" in r.json()["error"]["message"]
    spec = client.get("/openapi.json").json()["paths"]["/v1/documents/{doc_id}/pages/{page}.png"]["get"]
    assert "Without `kb`" in spec["description"]
    assert client.delete("/v1/kbs/shipping").status_code == 200


# --- 5. "KB not found" lists no other KB ---------------------------------------------------------------
def test_kb_not_found_names_no_other_kb(world: dict[str, Any]) -> None:
    """Regression: the 404 listed every knowledge base's name (a leak to a key scoped elsewhere)."""
    client: TestClient = world["client"]
    assert client.post("/v1/kbs", json={"name": "secret-plans"}).status_code == 201
    for r in (
        client.get("/v1/kbs/nope"),
        client.post("/v1/search", json={"query": "x", "kb": "nope"}),
        client.get("/v1/kbs/nope/documents"),
        client.delete("/v1/kbs/nope"),
        client.get("/v1/documents/abc/pages/1.png", params={"kb": "nope"}),
    ):
        assert r.status_code == 404 and r.json()["error"]["type"] == "KnowledgeBaseNotFound", r.text
        message = r.json()["error"]["message"]
        assert "'nope'" in message and "GET /v1/kbs" in message
        assert "secret-plans" not in message and "docs" not in message.replace("/v1/kbs", "")
    assert client.delete("/v1/kbs/secret-plans").status_code == 200


# --- 6. /docs and /openapi.json in /metrics ------------------------------------------------------------
def test_docs_and_openapi_have_their_own_metrics_route(world: dict[str, Any]) -> None:
    """Regression: /docs, /openapi.json (and the static files) were counted as route="unmatched"."""
    client: TestClient = world["client"]
    for path in ("/docs", "/openapi.json", "/static/app.css"):
        assert client.get(path).status_code == 200
    text = client.get("/metrics").text
    for route in ("/docs", "/openapi.json", "/static"):
        assert f'citeqa_http_requests_total{{method="GET",route="{route}",status="200"}}' in text, route
    assert 'route="unmatched",status="200"' not in text
    client.get("/v1/no-such-route")
    assert 'route="unmatched",status="404"' in client.get("/metrics").text  # a real miss still is


# --- 7. 405 with a complete Allow header --------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/kbs", "GET, POST"),
        ("PATCH", "/v1/kbs/docs", "GET, DELETE"),
        ("PUT", "/v1/jobs/abc", "GET, DELETE"),
        ("GET", "/v1/search", "POST"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/docs", "GET"),
    ],
)
def test_405_has_an_allow_header_with_every_method(world: dict[str, Any], method: str, path: str, allow: str) -> None:
    """Regression: 405 responses came without `Allow`, or with only the first matching route's method."""
    r = world["client"].request(method, path)
    assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowed"
    assert r.headers["allow"] == allow


# --- 8. progress inside one file ------------------------------------------------------------------------
def test_ratio_counts_chunks_inside_a_file() -> None:
    from server.jobprogress import share_done as _ratio

    base = {"files_total": 1, "files_done": 0, "to_parse": 1}
    assert _ratio({**base, "chunks": 0, "chunks_per_s": 0.0, "eta_s": None}) == 0.0
    assert _ratio({**base, "chunks": 30, "chunks_per_s": 10.0, "eta_s": 7.0}) == pytest.approx(0.3)
    # Two files, one unchanged (done at scan time), the other half embedded.
    assert (
        _ratio({"files_total": 2, "files_done": 1, "to_parse": 1, "chunks": 5, "chunks_per_s": 5.0, "eta_s": 1.0})
        == 0.75
    )
    assert (
        _ratio({"files_total": 2, "files_done": 2, "to_parse": 2, "chunks": 8, "chunks_per_s": 4.0, "eta_s": 0.0})
        == 1.0
    )
    assert _ratio({"phase": "scanning"}) is None


class SlowEmbedder(FakeEmbedder):
    """The fake embedder at 0.15 s per batch, so a single file's job is seen half done."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.15)
        return super().embed_documents(texts)


def test_single_file_job_ratio_moves_before_the_file_is_done(tmp_path: Path) -> None:
    """Regression: a one-file job reported ratio 0 until the whole file was written."""
    settings = make_settings(
        tmp_path / "home", **{"embedder.batch_size": 2, "chunking.max_tokens": 40, "chunking.min_tokens": 0}
    )
    text = "\n\n".join(
        f"Paragraph {i} says that shipment {i} left port number {i * 7} on a Monday." * 3 for i in range(40)
    )
    with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=StubGenerator())) as client:
        client.app.state.citeqa._ingest_embedder = SlowEmbedder()  # type: ignore[attr-defined]
        r = client.post(
            "/v1/kbs/slow/documents",
            files=[("files", ("long.txt", text.encode(), "text/plain"))],
            data={"create": "true"},
        )
        job_id = r.json()["job"]["id"]
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] not in {"queued", "running"}:
                break
            seen.append(job["progress"].get("ratio", 0.0))
            time.sleep(0.05)
        assert job["state"] == "succeeded" and job["summary"]["chunks"] >= 20, job
        assert job["progress"]["ratio"] == 1.0
        middle = [x for x in seen if 0.0 < x < 1.0]
        assert middle, seen
        assert seen == sorted(seen)  # never backwards
        assert "pages" in job["progress"] and "chunks" in job["progress"]


# --- 9. /docs offline -----------------------------------------------------------------------------------
def test_docs_pages_use_only_local_assets(world: dict[str, Any]) -> None:
    """Regression: /docs loaded Swagger UI from a CDN, so it was blank without internet."""
    client: TestClient = world["client"]
    for page, needle in (("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "http://" not in html.text and "https://" not in html.text and "//cdn" not in html.text, page
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert assets, page
        for url in assets:
            assert url.startswith("/"), url
            r = client.get(url)
            assert r.status_code == 200 and len(r.content) > 1000, url
        if page == "/docs":
            assert "'/openapi.json'" in html.text or '"/openapi.json"' in html.text
            assert '"validatorUrl": null' in html.text
            js = client.get("/docs/assets/swagger-ui-bundle.js").text
            assert needle in js and "isOAS31" in js  # Swagger UI 5: renders FastAPI's OpenAPI 3.1
    assert client.get("/docs/oauth2-redirect").status_code == 200


# --- 10. password for encrypted PDFs ----------------------------------------------------------------
def test_upload_password_opens_an_encrypted_pdf(world: dict[str, Any]) -> None:
    """Regression: REST upload had no way to give an encrypted PDF's password."""
    client: TestClient = world["client"]
    pdf = make_encrypted_pdf(world["root"] / "vault.pdf", text="The vault code is 4711.", password="open-sesame")
    locked = upload(client, "docs", [("vault.pdf", pdf.read_bytes())])
    assert locked["state"] == "failed" and "encrypted" in locked["error"] and locked["error"].startswith("vault.pdf")
    wrong = upload(client, "docs", [("vault.pdf", pdf.read_bytes())], password="nope")
    assert wrong["state"] == "failed" and "wrong" in wrong["error"]
    r = client.post(
        "/v1/kbs/docs/documents",
        files=[("files", ("vault.pdf", pdf.read_bytes(), "application/pdf"))],
        data={"password": "open-sesame"},
    )
    assert r.status_code == 202 and "open-sesame" not in r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded" and job["summary"]["added"] == 1, job
    assert "open-sesame" not in json.dumps(client.get("/v1/jobs").json())
    hits = client.post("/v1/search", json={"query": "vault code", "kb": "docs"}).json()["hits"]
    assert any("4711" in h["text"] for h in hits)
    body = client.get("/openapi.json").json()["paths"]["/v1/kbs/{kb}/documents"]["post"]["requestBody"]
    assert "password" in body["content"]["multipart/form-data"]["schema"]["properties"]
    # A password sent as a file part is a client error, not a crash.
    r = client.post(
        "/v1/kbs/docs/documents",
        files=[("files", ("a.txt", b"x", "text/plain")), ("password", ("p", b"pw", "text/plain"))],
    )
    assert r.status_code == 400


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian's chromium and chromium-driver"
)
def test_docs_render_in_a_browser_without_internet(tmp_path: Path) -> None:
    """Swagger UI draws the operations from the local assets (this machine reaches no CDN)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_server_openai import live_server

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        with live_server(make_settings(tmp_path / "home"), embedder=FakeEmbedder(), generator=StubGenerator()) as base:
            driver.get(base + "/docs")
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
            assert "citeqa" in driver.find_element(By.CSS_SELECTOR, ".info .title").text
            assert not driver.find_elements(By.CSS_SELECTOR, ".errors-wrapper")  # the 3.1 schema rendered
    finally:
        driver.quit()
