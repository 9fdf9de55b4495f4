"""The MCP server: citeqa's tools for agents, over stdio (`citeqa mcp`) and streamable HTTP (`/mcp`).

Built on the official `mcp` SDK (2.x, `MCPServer`). Both transports run the same tools against an
`AppState`, and the tools call the REST handlers' own functions (they are plain functions of the
state), so an agent and a REST client get the same answers, limits and errors. A citeqa error
(unknown knowledge base, missing page, empty query...) comes back as an MCP tool error carrying its
one-line message; the server goes on.

Tools: `list_knowledge_bases`, `list_documents(kb)`, `search(query, kb, k, doc_ids)`,
`ask(question, kb, doc_ids)`, `get_page(doc_id, page, kb)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import INVALID_REQUEST, ToolAnnotations
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from rag.errors import CiteqaError, InvalidRequest, Unauthorized
from rag.protocols import SearchFilter
from rag.records import display_name
from rag.settings import Settings
from server.answering import answer, answer_payload
from server.auth import FULL_ACCESS, Principal, require_api_key
from server.deps import existing_kb
from server.errors import error_body, status_for
from server.routes import documents as documents_routes
from server.routes import kbs as kbs_routes
from server.routes import search as search_routes
from server.schemas import MAX_DOC_IDS, MAX_PAGE, SearchRequest
from server.state import AppState

INSTRUCTIONS = (
    "citeqa answers questions from a collection of documents (Chinese and English) with page "
    "citations whose quotes were checked against the page text. Use `search` to find passages, "
    "`ask` for a cited answer (refused=true means the documents do not support one), and `get_page` "
    "to read a cited page in full. `kb` picks a knowledge base (see `list_knowledge_bases`); "
    "without it the server's default one is used."
)

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

KbArg = Annotated[
    str | None,
    Field(description="Knowledge base name (see list_knowledge_bases); default: the server's default KB."),
]
DocIdsArg = Annotated[
    list[str] | None,
    Field(max_length=MAX_DOC_IDS, description="Only use these documents (ids from list_documents)."),
]

Lifespan = Callable[[MCPServer[Any]], AbstractAsyncContextManager[Any]]


@contextmanager
def tool_errors() -> Iterator[None]:
    """Anticipated failures become MCP tool errors (is_error, with the message); the rest are crashes."""
    try:
        yield
    except CiteqaError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc
    except ValidationError as exc:  # the REST request models re-check what the tool schema allowed
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ToolError(f"InvalidRequest: {where}: {first.get('msg', 'invalid value')}") from exc


def principal_of(ctx: Context) -> Principal:
    """The key behind this tool call: the one `/mcp` checked (McpEndpoint), or full access over stdio
    (the local user who started `citeqa mcp`)."""
    request = ctx.request_context.request
    if request is None:
        return FULL_ACCESS
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # never: McpEndpoint authenticates every request first
        raise ToolError("Unauthorized: no API key was checked for this request")
    return principal


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo MCPServer()'s logging.basicConfig (a Rich handler at INFO on the root logger, for every library):
    citeqa writes its own JSON log lines and leaves the root logger to the application."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def build_mcp_server(state: AppState, *, lifespan: Lifespan | None = None) -> MCPServer[Any]:
    """The MCP server with citeqa's tools, answering from `state` (its stores, retrievers and LLM)."""
    from server.app import _version  # here: server.app imports this module

    with _root_logging_kept():
        mcp: MCPServer[Any] = MCPServer("citeqa", instructions=INSTRUCTIONS, version=_version(), lifespan=lifespan)

    @mcp.tool(annotations=READ_ONLY)
    def list_knowledge_bases(ctx: Context) -> dict[str, Any]:
        """The knowledge bases with their document and chunk counts, and which one is the default."""
        with tool_errors():
            return kbs_routes.list_all(state, principal_of(ctx))

    @mcp.tool(annotations=READ_ONLY)
    def list_documents(ctx: Context, kb: KbArg = None) -> dict[str, Any]:
        """The documents of a knowledge base: id, name, title, pages, chunks (newest first)."""
        with tool_errors():
            principal = principal_of(ctx)
            return documents_routes.list_documents(existing_kb(state, kb, principal), state, principal)

    @mcp.tool(annotations=READ_ONLY)
    def search(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, max_length=4000, description="What to look for.")],
        kb: KbArg = None,
        k: Annotated[int | None, Field(ge=1, le=100, description="How many hits (default: retrieval.top_k).")] = None,
        doc_ids: DocIdsArg = None,
    ) -> dict[str, Any]:
        """The passages that best match `query`, each with its document, page, text and score."""
        with tool_errors():
            if not query.strip():
                raise InvalidRequest("the query is empty")
            body = SearchRequest(query=query, kb=kb, k=k, doc_ids=doc_ids or [])
            return search_routes.search(body, state, principal_of(ctx))

    @mcp.tool(annotations=READ_ONLY)
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(min_length=1, max_length=4000, description="The question.")],
        kb: KbArg = None,
        doc_ids: DocIdsArg = None,
    ) -> dict[str, Any]:
        """A cited answer: `answer`, `refused`, and `citations` [{n, doc, doc_id, page, quote, verified}]."""
        with tool_errors():
            name = await anyio.to_thread.run_sync(existing_kb, state, kb, principal_of(ctx))
            pipeline = await anyio.to_thread.run_sync(state.pipeline, name)
            flt = SearchFilter(doc_ids=list(doc_ids)) if doc_ids else None
            limit = state.settings.server.request_timeout_s
            try:
                # Cancelling (time limit, client gone) stops the generation at the next token.
                with anyio.fail_after(limit):
                    result = await answer(pipeline, question, history=None, flt=flt, executor=state.answer_pool)
            except TimeoutError as exc:
                raise ToolError(f"Timeout: the answer took longer than {limit:g} s (server.request_timeout_s)") from exc
            return {"kb": name, **answer_payload(result)}

    @mcp.tool(annotations=READ_ONLY)
    def get_page(
        ctx: Context,
        doc_id: Annotated[str, Field(min_length=1, max_length=200, description="A document id (list_documents).")],
        page: Annotated[int, Field(ge=1, le=MAX_PAGE, description="1-based page number, as in citations.")],
        kb: KbArg = None,
    ) -> dict[str, Any]:
        """The full text of one page as it was parsed (what citations quote from)."""
        with tool_errors():
            name = existing_kb(state, kb, principal_of(ctx))
            store = state.store(name)
            info = store.get_document(doc_id)
            if page > info.pages:
                raise InvalidRequest(f"document {doc_id!r} has {info.pages} pages; there is no page {page}")
            return {
                "kb": name,
                "doc_id": doc_id,
                "doc": display_name(info.source),
                "title": info.title,
                "page": page,
                "pages": info.pages,
                "text": store.page_text(doc_id, page),
            }

    return mcp


# --------------------------------------------------------------------------- stdio: `citeqa mcp`
def run_stdio(settings: Settings) -> None:
    """Serve the tools over stdin/stdout until the client closes them."""
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        # Models load only once the transport owns stdout (the SDK then points fd 1 at stderr), so
        # whatever a native library prints cannot corrupt the protocol stream.
        state.start_loading()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.close)

    build_mcp_server(state, lifespan=lifespan).run("stdio")


# --------------------------------------------------------------------------- streamable HTTP: `/mcp`
class McpEndpoint:
    """The ASGI endpoint at `/mcp`: the same tools over streamable HTTP, behind the REST API keys."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.server = build_mcp_server(state)

    def _security(self) -> TransportSecuritySettings | None:
        """DNS-rebinding protection on a loopback bind (as the SDK does); CORS origins stay allowed."""
        server = self.state.settings.server
        if server.host not in {"127.0.0.1", "localhost", "::1"}:
            return None
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *server.cors_origins],
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the SDK's session manager for one app lifespan (a manager runs once: a new one each time)."""
        self.server.streamable_http_app(streamable_http_path="/mcp", transport_security=self._security())
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await require_api_key(Request(scope))
        except Unauthorized as exc:
            await refusal(exc)(scope, receive, send)
            return
        await self.server.session_manager.handle_request(scope, receive, send)


def refusal(exc: Unauthorized) -> JSONResponse:
    """The 401 of `/mcp`: citeqa's error envelope that is also a JSON-RPC error.

    MCP clients read a JSON-RPC error from the body of a non-2xx reply, so the agent sees "invalid API
    key" rather than a generic "server returned an error response".
    """
    body = {"jsonrpc": "2.0", "id": None, **error_body(type(exc).__name__, str(exc), code=INVALID_REQUEST)}
    return JSONResponse(body, status_code=status_for(exc), headers={"WWW-Authenticate": "Bearer"})
