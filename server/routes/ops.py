"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.auth import require_api_key
from server.deps import PrincipalDep, StateDep

open_router = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"], dependencies=[Depends(require_api_key)])


@open_router.get("/healthz", summary="Liveness: the process answers (no API key needed)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: 200 once the embedder and the LLM are loaded, 503 before",
    responses={503: {"description": "Models still loading or failed to load"}},
)
def readyz(state: StateDep) -> Any:
    body = state.readiness()
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: StateDep, principal: PrincipalDep) -> Response:
    embedding: dict[str, tuple[int, int]] = {}
    for kb, store in state.open_stores().items():
        if principal.allows(kb):
            try:
                embedding[kb] = store.embedding_counts()
            except Exception:  # noqa: BLE001 - a KB closed or unreachable mid-scrape is left out of this one
                continue
    return Response(state.metrics.render(embedding), media_type=CONTENT_TYPE_LATEST)
