"""ASGI middleware: one JSON log line + metrics per request, the request time limit, request body limits.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body
from server.metrics import Metrics

access_log = logging.getLogger("citeqa.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the message, or the record's `fields` when it carries them."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        else:
            data["msg"] = record.getMessage()
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for citeqa's loggers (called by `serve`, not at import)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("citeqa", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


class ObserveMiddleware:
    """Request id, access log line, request counters and latency histograms by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex[:16]
        status = 500
        sent_bytes = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "fields": {
                        "event": "request",
                        "request_id": request_id,
                        "method": method,
                        "path": scope.get("path", ""),
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 1),
                        "bytes": sent_bytes,
                        "client": client[0] if client else None,
                    }
                },
            )


class TimeoutMiddleware:
    """Ends a request that runs longer than `timeout_s`: 504 if nothing was sent yet, else cut the stream."""

    def __init__(self, app: ASGIApp, timeout_s: float, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, send_wrapper), timeout=self.timeout_s)
        except TimeoutError:
            if started:
                return  # headers are out: closing the connection is all that is left
            message = f"request exceeded the server's time limit of {self.timeout_s:g} s (server.request_timeout_s)"
            await _send_error(send, 504, "Timeout", message)


class BodyLimitMiddleware:
    """413 for a request body over its limit: at once when Content-Length says so, else as it arrives.

    Without it a JSON body had no limit at all (300 MB to /v1/search: a 500, memory tripled and stayed)
    and a chunked upload was read in full before any check. `upload_bytes` applies to POSTs of files
    to /v1/kbs/{kb}/documents, `default_bytes` to everything else.
    """

    def __init__(self, app: ASGIApp, default_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.upload_bytes = upload_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        if scope.get("method") == "POST" and _UPLOAD_PATH.fullmatch(str(scope.get("path", ""))):
            return self.upload_bytes, "the upload limit (server.max_upload_files x server.max_upload_mb)"
        return self.default_bytes, "the limit for a request body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit_for(scope)
        message = f"request body larger than {what} of {limit / (1 << 20):g} MB"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send, 413, "PayloadTooLarge", message)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            item = await receive()
            if item["type"] == "http.request":
                received += len(item.get("body", b""))
                if received > limit:  # an HTTPException passes FastAPI's body reading unchanged
                    raise StarletteHTTPException(413, detail=message)
            return item

        await self.app(scope, counted_receive, send)


_UPLOAD_PATH = re.compile(r"/v1/kbs/[^/]+/documents/?")


async def _send_error(send: Send, status: int, type_name: str, message: str) -> None:
    body = json.dumps(error_body(type_name, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_template(scope: Scope) -> str:
    """The route a request matched, as its template (bounded label values), or "unmatched".

    FastAPI's own routes put themselves in the scope; plain Starlette routes and mounts
    (/openapi.json, /static, /docs/assets, /mcp) leave only their endpoint, so the route is found by it.
    """
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is not None and app is not None:
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if getattr(candidate, "endpoint", None) is endpoint or getattr(candidate, "app", None) is endpoint:
                return str(getattr(candidate, "path", "")) or "unmatched"
    return "unmatched"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")[:64]
    return None
