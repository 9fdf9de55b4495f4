"""Scoped API keys (server/auth.py): a key for KB 'alpha' is refused on KB 'beta' everywhere.

One app (create_app + TestClient, fake embedder, SmolLM2 loaded; every answer is a refusal, so the LLM never
runs and the tests stay fast) holds KBs 'alpha' and 'beta',
each with one PDF, uploaded with a plain full-access key (CITEQA_API_KEYS' setting). The scoped keys come
from a TOML keys file (by sha256) and from the settings section `server.keys` (by key):

* alpha-rw: alpha (and 'alpha-new', to create) read-write;  * alpha-ro: alpha, read-only;
* all-ro: every KB, read-only.

A KB outside the key's scope is 403 whether or not it exists; a job or a page (by doc id only) of another KB
is 404, as an unknown id. MCP runs over streamable HTTP on a live server with the official `mcp` client.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from apihelp import wait_job
from fastapi.testclient import TestClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from pdfgen import make_pdf
from test_server_openai import live_server, upload_and_wait

from rag.errors import ConfigError
from rag.settings import Settings, load_settings
from server.app import create_app
from server.auth import FULL_ACCESS, KeyRing, Principal

ADMIN, ALPHA_RW, ALPHA_RO, ALL_RO = "admin-key", "alpha-rw-key", "alpha-ro-key", "all-ro-key"
ALPHA_TEXT = "Lumen Robotics shipped 4,820 robots in 2024 from its Suzhou plant."
BETA_TEXT = "Xinghe Energy built a battery plant in Hefei with 800 employees."


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_file(folder: Path) -> Path:
    """The TOML keys file: hashes only, no secret in it."""
    path = folder / "keys.toml"
    path.write_text(
        f'[[keys]]\nname = "alpha-rw"\nsha256 = "{sha(ALPHA_RW)}"\nkbs = ["alpha", "alpha-new"]\n\n'
        f'[[keys]]\nname = "all-ro"\nsha256 = "{sha(ALL_RO).upper()}"\nkbs = "*"\nread_only = true\n',
        encoding="utf-8",
    )
    return path


def scoped_settings(home: Path, keys: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "llm.name": "smollm2-135m",
        "paths.home": home,
        "embedder.name": "fake",
        # Every answer is a refusal (no evidence is ever enough): the LLM is never run, the tests stay fast.
        "retrieval.min_score": 2.0,
        "retrieval.min_keyword_coverage": 1.01,
        "retrieval.translate": False,
        "llm.max_answer_tokens": 16,
        "llm.context_tokens": 2048,
        "llm.threads": 1,
        "server.api_keys": [ADMIN],
        "server.keys_file": keys,
        "server.keys": [{"name": "alpha-ro", "key": ALPHA_RO, "kbs": ["alpha"], "read_only": True}],
    }
    base.update(overrides)
    return load_settings(overrides=base)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, smollm: Any) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scopes")
    app = create_app(scoped_settings(root / "home", keys_file(root)), generator=smollm)
    docs: dict[str, str] = {}
    jobs: dict[str, str] = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        for kb, text in [("alpha", ALPHA_TEXT), ("beta", BETA_TEXT)]:
            pdf = make_pdf(root / f"{kb}.pdf", [text])
            r = client.post(
                f"/v1/kbs/{kb}/documents?create=true",
                files=[("files", (pdf.name, pdf.read_bytes(), "application/pdf"))],
                headers=auth(ADMIN),
            )
            assert r.status_code == 202, r.text
            jobs[kb] = r.json()["job"]["id"]
            client.headers.update(auth(ADMIN))
            assert wait_job(client, jobs[kb])["state"] == "succeeded"
            del client.headers["Authorization"]
            docs[kb] = client.get(f"/v1/kbs/{kb}/documents", headers=auth(ADMIN)).json()["documents"][0]["id"]
        yield {"client": client, "docs": docs, "jobs": jobs, "root": root}


def call(client: TestClient, key: str, method: str, path: str, body: Any = None) -> Any:
    return client.request(method, path, json=body, headers=auth(key))


def kb_requests(kb: str, doc: str) -> list[tuple[str, str, Any]]:
    """Every REST route that names a knowledge base (path, query or body), read and write."""
    return [
        ("GET", f"/v1/kbs/{kb}", None),
        ("GET", f"/v1/kbs/{kb}/documents", None),
        ("GET", f"/v1/kbs/{kb}/documents/{doc}", None),
        ("POST", "/v1/search", {"query": "plant", "kb": kb}),
        ("POST", "/v1/ask", {"question": "Where is the plant?", "kb": kb}),
        ("POST", "/v1/ask", {"question": "Where is the plant?", "kb": kb, "stream": True}),
        ("POST", "/v1/chat/completions", {"model": f"citeqa:{kb}", "messages": [{"role": "user", "content": "Hi?"}]}),
        ("POST", "/v1/chat/completions", {"model": kb, "messages": [{"role": "user", "content": "Hi?"}]}),
        ("GET", f"/v1/documents/{doc}/pages/1.png?kb={kb}", None),
        ("GET", f"/v1/jobs?kb={kb}", None),
        ("POST", f"/v1/kbs/{kb}/documents/{doc}/reingest", None),
        ("DELETE", f"/v1/kbs/{kb}/documents/{doc}", None),
        ("DELETE", f"/v1/kbs/{kb}", None),
    ]


@pytest.mark.parametrize("key", [ALPHA_RW, ALPHA_RO])
def test_a_key_for_alpha_gets_403_on_beta_everywhere(world: dict[str, Any], key: str) -> None:
    client, docs = world["client"], world["docs"]
    for method, path, body in kb_requests("beta", docs["beta"]):
        r = call(client, key, method, path, body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        error = r.json()["error"]
        assert error["type"] == "Forbidden" and "'beta'" in error["message"], error
    # The same 403 for a KB that does not exist: the answer says nothing about what exists.
    for method, path, body in kb_requests("no-such-kb", docs["beta"]):
        assert call(client, key, method, path, body).status_code == 403, (method, path)
    upload = client.post(
        "/v1/kbs/beta/documents", files=[("files", ("x.txt", b"text", "text/plain"))], headers=auth(key)
    )
    assert upload.status_code == 403, upload.text
    assert client.post("/v1/kbs", json={"name": "beta2"}, headers=auth(key)).status_code == 403
    # Still beta's, intact.
    assert call(client, ADMIN, "GET", f"/v1/kbs/beta/documents/{docs['beta']}").status_code == 200


@pytest.mark.parametrize("key", [ALPHA_RW, ALPHA_RO])
def test_things_named_by_id_in_another_kb_are_not_found(world: dict[str, Any], key: str) -> None:
    client, docs, jobs = world["client"], world["docs"], world["jobs"]
    for method, path in [
        ("GET", f"/v1/jobs/{jobs['beta']}"),
        ("POST", f"/v1/jobs/{jobs['beta']}/cancel"),
        ("DELETE", f"/v1/jobs/{jobs['beta']}"),
        ("GET", f"/v1/documents/{docs['beta']}/pages/1.png"),  # no ?kb=: only the key's KBs are searched
    ]:
        r = call(client, key, method, path)
        assert r.status_code == 404, (method, path, r.text)
    listed = call(client, key, "GET", "/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [jobs["alpha"]]
    assert {j["kb"] for j in call(client, ADMIN, "GET", "/v1/jobs").json()["jobs"]} == {"alpha", "beta"}


def test_lists_show_only_the_keys_kbs(world: dict[str, Any]) -> None:
    client = world["client"]

    def kbs(key: str) -> list[str]:
        return sorted(k["name"] for k in call(client, key, "GET", "/v1/kbs").json()["kbs"])

    def models(key: str) -> list[str]:
        return sorted(m["id"] for m in call(client, key, "GET", "/v1/models").json()["data"])

    assert kbs(ALPHA_RW) == kbs(ALPHA_RO) == ["alpha"]
    assert kbs(ADMIN) == kbs(ALL_RO) == ["alpha", "beta"]
    assert models(ALPHA_RW) == ["citeqa:alpha"]
    assert models(ADMIN) == ["citeqa:alpha", "citeqa:beta"]


def test_a_key_for_alpha_reads_and_asks_alpha(world: dict[str, Any]) -> None:
    client, docs = world["client"], world["docs"]
    for key in [ALPHA_RW, ALPHA_RO, ALL_RO]:
        assert call(client, key, "GET", "/v1/kbs/alpha").json()["documents"] == 1
        hits = call(client, key, "POST", "/v1/search", {"query": "robots shipped", "kb": "alpha"}).json()["hits"]
        assert hits and hits[0]["doc_id"] == docs["alpha"]
        page = call(client, key, "GET", f"/v1/documents/{docs['alpha']}/pages/1.png")
        assert page.status_code == 200 and page.content.startswith(b"\x89PNG")
        assert call(client, key, "GET", f"/v1/kbs/alpha/documents/{docs['alpha']}").status_code == 200
        assert call(client, key, "GET", f"/v1/jobs/{world['jobs']['alpha']}").status_code == 200
    answer = call(client, ALPHA_RO, "POST", "/v1/ask", {"question": "How many robots?", "kb": "alpha"})
    assert answer.status_code == 200 and answer.json()["kb"] == "alpha", answer.text
    streamed = call(
        client, ALPHA_RO, "POST", "/v1/ask", {"question": "How many robots?", "kb": "alpha", "stream": True}
    )
    assert streamed.status_code == 200 and "event: done" in streamed.text, streamed.text
    chat = call(
        client,
        ALPHA_RO,
        "POST",
        "/v1/chat/completions",
        {"model": "citeqa:alpha", "messages": [{"role": "user", "content": "How many robots?"}]},
    )
    assert chat.status_code == 200 and chat.json()["citeqa"]["kb"] == "alpha", chat.text


@pytest.mark.parametrize("key", [ALPHA_RO, ALL_RO])
def test_read_only_keys_are_refused_on_writes(world: dict[str, Any], key: str) -> None:
    client, docs, jobs = world["client"], world["docs"], world["jobs"]
    writes = [
        ("POST", "/v1/kbs", {"name": "alpha"}),
        ("DELETE", "/v1/kbs/alpha", None),
        ("DELETE", f"/v1/kbs/alpha/documents/{docs['alpha']}", None),
        ("POST", f"/v1/kbs/alpha/documents/{docs['alpha']}/reingest", None),
        ("POST", f"/v1/jobs/{jobs['alpha']}/cancel", None),
        ("DELETE", f"/v1/jobs/{jobs['alpha']}", None),
    ]
    for method, path, body in writes:
        r = call(client, key, method, path, body)
        assert r.status_code == 403, (method, path, r.text)
        assert "read-only" in r.json()["error"]["message"]
    upload = client.post(
        "/v1/kbs/alpha/documents", files=[("files", ("x.txt", b"more text", "text/plain"))], headers=auth(key)
    )
    assert upload.status_code == 403 and "read-only" in upload.text
    assert call(client, ADMIN, "GET", "/v1/kbs/alpha").json()["documents"] == 1  # nothing changed
    # The list says so, and the web page hides its upload and delete controls for such a key.
    assert call(client, key, "GET", "/v1/kbs").json()["read_only"] is True
    assert call(client, ALPHA_RW, "GET", "/v1/kbs").json()["read_only"] is False


def test_a_read_write_key_changes_only_its_kbs(world: dict[str, Any]) -> None:
    client = world["client"]
    assert call(client, ALPHA_RW, "POST", "/v1/kbs", {"name": "alpha-new"}).status_code == 201
    r = client.post(
        "/v1/kbs/alpha-new/documents",
        files=[("files", ("note.txt", b"The alpha team meets on Mondays.", "text/plain"))],
        headers=auth(ALPHA_RW),
    )
    assert r.status_code == 202, r.text
    client.headers.update(auth(ALPHA_RW))
    try:
        assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
    finally:
        del client.headers["Authorization"]
    assert call(client, ALPHA_RW, "DELETE", "/v1/kbs/alpha-new").json() == {"deleted": "alpha-new"}


def test_plain_api_keys_work_as_before(world: dict[str, Any]) -> None:
    client = world["client"]
    assert client.get("/v1/kbs").status_code == 401
    wrong = client.get("/v1/kbs", headers=auth("not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
    assert client.get("/v1/kbs", headers=auth(sha(ALPHA_RW))).status_code == 401  # the hash is not the key
    assert client.get("/healthz").status_code == 200
    assert call(client, ADMIN, "POST", "/v1/search", {"query": "plant", "kb": "beta"}).status_code == 200


def test_no_keys_leave_everything_open(tmp_path: Path) -> None:
    app = create_app(load_settings(overrides={"paths.home": tmp_path / "home", "embedder.name": "fake"}))
    with TestClient(app) as client:
        assert client.post("/v1/kbs", json={"name": "open"}).status_code == 201
        assert [k["name"] for k in client.get("/v1/kbs").json()["kbs"]] == ["open"]
        assert client.delete("/v1/kbs/open").status_code == 200


def test_keyring_lookup() -> None:
    ring = KeyRing.from_settings(
        load_settings(
            overrides={
                "server.api_keys": ["plain"],
                "server.keys": [{"name": "a", "sha256": sha("secret"), "kbs": ["x", "y"], "read_only": True}],
            }
        ).server
    )
    assert ring.lookup("plain") is FULL_ACCESS
    assert ring.lookup("secret") == Principal("a", frozenset({"x", "y"}), read_only=True)
    assert ring.lookup("secre") is None and ring.lookup("") is None
    assert not KeyRing.from_settings(load_settings().server).enabled


# --------------------------------------------------------------------------- malformed keys files
ENTRY = {"name": "a", "key": "k", "kbs": ["alpha"]}
BAD_FILES = {
    "syntax": ("keys.toml", '[[keys]\nname = "a"', "not valid TOML"),
    "no list": ("keys.json", json.dumps({"key": "k"}), "expected a list of keys"),
    "no kbs": ("keys.json", json.dumps([{"name": "a", "key": "k"}]), "key #1: kbs: Field required"),
    "both": ("keys.json", json.dumps([{**ENTRY, "sha256": sha("k")}]), "exactly one of 'key' and 'sha256'"),
    "neither": ("keys.json", json.dumps([{"name": "a", "kbs": "*"}]), "exactly one of 'key' and 'sha256'"),
    "bad hash": ("keys.toml", '[[keys]]\nname="a"\nsha256="abc"\nkbs="*"', "key #1: sha256"),
    "typo": ("keys.json", json.dumps([{**ENTRY, "readonly": True}]), "key #1: readonly: Extra inputs"),
    "bad kb": ("keys.json", json.dumps([{**ENTRY, "kbs": ["../etc"]}]), "invalid knowledge base name"),
    "twice": ("keys.json", json.dumps([ENTRY, {**ENTRY, "name": "b"}]), "the same API key is configured twice"),
    "same name": ("keys.json", json.dumps([ENTRY, {**ENTRY, "key": "k2"}]), "two API keys are named 'a'"),
    "suffix": ("keys.yaml", "keys: []", "name a .toml or .json file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_malformed_keys_file_stops_the_start(tmp_path: Path, case: str) -> None:
    name, text, expected = BAD_FILES[case]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        create_app(load_settings(overrides={"paths.home": tmp_path / "home", "server.keys_file": path}))
    message = str(info.value)
    assert expected in message and str(path) in message, message


def test_a_missing_keys_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        create_app(load_settings(overrides={"server.keys_file": tmp_path / "nope.toml"}))


def test_citeqa_serve_reports_a_bad_keys_file_in_one_line(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "keys.json"
    bad.write_text("[{]", encoding="utf-8")
    citeqa = str(Path(sys.executable).with_name("citeqa"))
    done = subprocess.run(
        [citeqa, "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CITEQA_SERVER__KEYS_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "not valid JSON" in done.stderr and "Traceback" not in done.stderr, done.stderr


# --------------------------------------------------------------------------- MCP over streamable HTTP
def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture(scope="module")
def mcp_server(world: dict[str, Any], smollm: Any) -> Iterator[tuple[str, str]]:
    """A live server with its own data directory (one app per directory) holding alpha and beta.
    Yields the /mcp URL and beta's document id."""
    root: Path = world["root"]
    with live_server(scoped_settings(root / "mcp-home", root / "keys.toml"), generator=smollm) as base:
        for kb in ["alpha", "beta"]:
            assert upload_and_wait(base, kb, [root / f"{kb}.pdf"], auth(ADMIN))["state"] == "succeeded"
        listed = httpx2.get(f"{base}/v1/kbs/beta/documents", headers=auth(ADMIN)).json()
        yield f"{base}/mcp", listed["documents"][0]["id"]


def test_mcp_tools_refuse_another_kb(mcp_server: tuple[str, str]) -> None:
    mcp_url, beta_doc = mcp_server

    async def main() -> None:
        async with httpx2.AsyncClient(headers=auth(ALPHA_RW), timeout=120) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http), read_timeout_seconds=120) as client:
                kbs = await client.call_tool("list_knowledge_bases", {})
                assert not kbs.is_error and [k["name"] for k in kbs.structured_content["kbs"]] == ["alpha"]
                found = await client.call_tool("search", {"query": "robots", "kb": "alpha"})
                assert not found.is_error and found.structured_content["hits"], text_of(found)
                for tool, args in [
                    ("list_documents", {"kb": "beta"}),
                    ("search", {"query": "plant", "kb": "beta"}),
                    ("ask", {"question": "Where is the plant?", "kb": "beta"}),
                    ("get_page", {"doc_id": beta_doc, "page": 1, "kb": "beta"}),
                    ("search", {"query": "plant", "kb": "no-such-kb"}),
                ]:
                    result = await client.call_tool(tool, args)
                    assert result.is_error, (tool, result)
                    expected = f"Forbidden: API key 'alpha-rw' may not use knowledge base '{args['kb']}'"
                    assert expected in text_of(result), (tool, text_of(result))
        async with httpx2.AsyncClient(headers=auth(ADMIN), timeout=120) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http), read_timeout_seconds=120) as client:
                kbs = await client.call_tool("list_knowledge_bases", {})
                assert [k["name"] for k in kbs.structured_content["kbs"]] == ["alpha", "beta"]
                page = await client.call_tool("get_page", {"doc_id": beta_doc, "page": 1, "kb": "beta"})
                assert not page.is_error and "Hefei" in page.structured_content["text"], text_of(page)

    anyio.run(main)
