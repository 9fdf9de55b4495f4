"""The citeqa HTTP service: `create_app(settings)` builds it, `serve(settings)` runs it with uvicorn.

Routes: REST under /v1 (knowledge bases, documents, jobs, search, ask, page images), the
OpenAI-compatible /v1/models and /v1/chat/completions, the MCP tools at /mcp (streamable HTTP),
/healthz, /readyz, /metrics, and the web chat at /. Models load once per app, in the background,
when the lifespan starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from rag.protocols import Embedder, Generator
from rag.settings import Settings
from server.auth import KeyRing
from server.errors import install_error_handlers
from server.mcp import McpEndpoint
from server.middleware import BodyLimitMiddleware, ObserveMiddleware, TimeoutMiddleware
from server.routes import ask, documents, jobs, kbs, openai, ops, pages, search, web
from server.schemas import MAX_BODY_BYTES
from server.state import AppState
from server.uploads import upload_body_limit

DESCRIPTION = """
Offline Chinese/English document QA with checked page citations.

* **Auth**: when `CITEQA_API_KEYS` is set, send `Authorization: Bearer <key>` on every route except
  `/healthz` (the web page's static files and these docs are open too: they hold no data). A scoped key
  (`server.keys`, `server.keys_file`) may be limited to some knowledge bases and to reading: anything else
  is `403 Forbidden`, whether or not the knowledge base exists.
* **Errors**: JSON `{"error": {"type", "message"}}` with a 4xx/5xx status.
* **Limits**: a JSON body up to 4 MB, an upload up to `server.max_upload_files` x `server.max_upload_mb`
  (with or without `Content-Length`: counted as it arrives); more is `413 PayloadTooLarge`. Request fields
  are strictly typed (`"stream": 0` is a 422, not `false`).
* **OpenAI-compatible**: knowledge bases are models named `citeqa:<kb>`.
* **MCP**: the tools `list_knowledge_bases`, `list_documents`, `search`, `ask` and `get_page` over
  streamable HTTP at `/mcp` (same API keys).
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("citeqa")
    except PackageNotFoundError:
        return "0.0.0+local"


DOCS_ASSETS = "/docs/assets"


def install_offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served from the installed
    `fastapi-offline` package (it bundles swagger-ui-dist 5 and ReDoc), so they work without internet."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # No badge that sends the schema to validator.swagger.io.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    generator: Generator | None = None,
) -> FastAPI:
    """Build the app. `embedder` / `generator` may be passed in already loaded (tests share one model)."""
    from rag.settings import apply_offline_defaults, load_settings

    if settings is None:
        settings = load_settings()
    apply_offline_defaults(settings)  # paths.allow_hub from any source (flag, env, TOML) decides
    keys = KeyRing.from_settings(settings.server)  # a malformed keys file stops the start here (ConfigError)
    state = AppState(settings, embedder=embedder, generator=generator)
    mcp = McpEndpoint(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.ensure_jobs()
        state.start_loading()
        try:
            async with mcp.running():
                yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="citeqa",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: ours are served locally
        redoc_url=None,
        openapi_tags=[
            {"name": "knowledge bases", "description": "Create, list, inspect and delete knowledge bases."},
            {"name": "documents", "description": "Upload, list, delete, re-ingest; rendered pages."},
            {"name": "jobs", "description": "Background ingestion with progress and cancellation."},
            {"name": "search and ask", "description": "Retrieval and cited answers (JSON or SSE)."},
            {"name": "OpenAI-compatible", "description": "Use any OpenAI client: model = 'citeqa:<kb>'."},
            {"name": "operations", "description": "Health, readiness, Prometheus metrics."},
        ],
    )
    app.state.citeqa = state
    app.state.citeqa_keys = keys
    install_error_handlers(app)

    app.include_router(ops.open_router)
    app.include_router(ops.router)
    for module in (kbs, documents, jobs, search, ask, openai, pages):
        app.include_router(module.router)
    app.include_router(web.router)
    install_offline_docs(app)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.add_route("/mcp", mcp, include_in_schema=False)  # an ASGI endpoint: every method, checks the key itself

    # Added innermost first: body limits inside CORS (a 413 carries its headers), CORS inside the time
    # limit, which sits inside the access log.
    app.add_middleware(
        BodyLimitMiddleware, default_bytes=MAX_BODY_BYTES, upload_bytes=upload_body_limit(settings.server)
    )
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-Id"],
            expose_headers=["X-Request-Id", "X-Highlight-Matches"],
        )
    # /mcp is exempt: its GET stream stays open by design; the `ask` tool keeps the time limit itself.
    app.add_middleware(TimeoutMiddleware, timeout_s=settings.server.request_timeout_s, exempt_prefixes=("/mcp",))
    app.add_middleware(ObserveMiddleware, metrics=state.metrics)
    return app


def serve(settings: Settings) -> None:
    """Run the service with uvicorn on settings.server.host:port (loopback by default)."""
    import uvicorn

    from server.middleware import configure_logging

    configure_logging()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,  # ObserveMiddleware writes one JSON line per request instead
        timeout_graceful_shutdown=10,
    )
