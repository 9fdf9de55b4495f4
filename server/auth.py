"""API keys: `Authorization: Bearer <key>` on every route but the open ones, when keys are configured.

Open without a key: `/healthz` (liveness probes), the web page's static code (`/`, `/static/*`: no
data in it; the page asks for a key and sends it on its API calls) and the OpenAPI description
(`/docs`, `/openapi.json`: the schema, no data).
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="An API key from CITEQA_API_KEYS (needed only when keys are set).")


def key_is_valid(given: str, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))
    return ok


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: raise Unauthorized (401) unless a configured key is presented."""
    keys: list[str] = request.app.state.citeqa.settings.server.api_keys
    if not keys:
        return
    credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not key_is_valid(credentials.credentials, keys):
        raise Unauthorized("invalid API key")
