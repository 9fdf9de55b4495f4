"""The ONE place where error types become HTTP statuses.

Every error leaves the server as JSON `{"error": {"type": ..., "message": ...}}` with a non-2xx
status (the OpenAI client reads the same envelope). The status comes from the exception's type,
looked up along its MRO so subclasses inherit their parent's status unless listed themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rag import errors as E

log = logging.getLogger("citeqa.server")

STATUS_BY_TYPE: dict[type[BaseException], int] = {
    E.KnowledgeBaseNotFound: 404,
    E.DocumentNotFound: 404,
    E.JobNotFound: 404,
    E.KnowledgeBaseExists: 409,
    E.EmbedderMismatch: 409,
    E.IndexMismatch: 409,
    E.EmbeddingsPending: 409,
    E.Cancelled: 409,
    E.PayloadTooLarge: 413,
    E.DocumentTooLarge: 413,
    E.InvalidRequest: 400,
    E.Unauthorized: 401,
    E.Forbidden: 403,
    E.UnsupportedFormat: 415,
    E.ParseError: 422,
    E.ModelNotAvailable: 503,
    E.ModelIntegrityError: 503,
    E.GenerationError: 502,
    E.EmbeddingError: 502,  # a remote embedding server failed: the fault is upstream of us
    E.ConfigError: 500,
    E.CiteqaError: 500,
}

HTTP_TYPE_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "InvalidRequest",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_for(exc: BaseException) -> int:
    """HTTP status for an exception, by the nearest listed type in its MRO (500 if none)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_TYPE.get(cls)
        if status is not None:
            return status
    return 500


def error_body(type_name: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON envelope shared by every error response (and SSE `error` events)."""
    return {"error": {"type": type_name, "message": message, **extra}}


def error_response(status: int, type_name: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(type_name, message, **extra), status_code=status, headers=headers)


def exception_to_response(exc: BaseException) -> JSONResponse:
    """Map a typed citeqa error (or anything else) to its JSON error response."""
    status = status_for(exc)
    if status >= 500 and not isinstance(exc, E.CiteqaError):
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "InternalError", "internal server error (details are in the server log)")
    return error_response(status, type(exc).__name__, str(exc) or type(exc).__name__)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (a 405's `Allow`, RFC 9110 section 15.5.6).

    Starlette's own 405 names only the first route that matched the path, while GET and POST on one
    path are often two routes. Each method is tried against the app's routes (their public `matches`).
    An empty list when a catch-all (a mount) answers every method: its own `Allow` stands then.
    """
    routes = request.app.router.routes
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return [] if len(allowed) == len(HTTP_METHODS) else allowed


def _redact(request: Request, response: JSONResponse, exc: BaseException) -> JSONResponse:
    """Error messages never show the server's folders (paths under CITEQA_HOME become relative)."""
    state = getattr(request.app.state, "citeqa", None)
    if state is None:
        return response
    message = str(exc) or type(exc).__name__
    redacted = state.redact(message)
    if redacted == message:
        return response
    return error_response(response.status_code, type(exc).__name__, redacted)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: citeqa errors, validation errors, HTTP errors, and the catch-all."""

    @app.exception_handler(E.CiteqaError)
    async def _citeqa(request: Request, exc: E.CiteqaError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return _redact(request, exception_to_response(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(422, "InvalidRequest", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = HTTP_TYPE_NAMES.get(exc.status_code, "HTTPError")
        response = error_response(exc.status_code, name, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:
            methods = allowed_methods(request)
            if methods:
                response.headers["Allow"] = ", ".join(methods)
        return response

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        response = exception_to_response(exc)
        return _redact(request, response, exc) if isinstance(exc, E.CiteqaError) else response
