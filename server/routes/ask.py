"""POST /v1/ask: an answer with checked citations, as JSON or as Server-Sent Events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rag.errors import CiteqaError
from rag.protocols import SearchFilter
from rag.records import Answer, Retrieved, Status
from server.answering import answer, answer_payload, history_from, stream_answer
from server.auth import require_api_key
from server.deps import PrincipalDep, existing_kb, get_state
from server.errors import error_body, status_for
from server.schemas import ERRORS, AskRequest, AskResponse, sse_event_schema
from server.state import AppState

router = APIRouter(prefix="/v1", tags=["search and ask"], dependencies=[Depends(require_api_key)], responses=ERRORS)

log = logging.getLogger("citeqa.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event; data is JSON so newlines inside pieces survive."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def answer_json(kb: str, result: Answer) -> dict[str, Any]:
    return {"kb": kb, **answer_payload(result)}


def error_event(exc: BaseException) -> str:
    if isinstance(exc, CiteqaError):
        body = error_body(type(exc).__name__, str(exc), status=status_for(exc))
    else:
        log.error("error while streaming an answer", exc_info=exc)
        body = error_body("InternalError", "internal server error (details are in the server log)", status=500)
    return sse("error", body)


@router.post(
    "/ask",
    response_model=AskResponse,
    summary="Answer a question with page citations (JSON, or SSE when stream=true)",
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": sse_event_schema(["status", "evidence", "token", "citations", "done", "error"]),
                    "example": 'event: status\ndata: {"stage": "retrieving"}\n\n'
                    'event: evidence\ndata: {"evidence": [{"doc": "report.pdf", "page": 3, '
                    '"text": "Revenue was $5.2 million.", "retrieved": true}], "seconds": 0.12}\n\n'
                    'event: status\ndata: {"stage": "thinking"}\n\n'
                    'event: token\ndata: {"text": "Revenue"}\n\n'
                    'event: citations\ndata: {"answer": "...", "citations": []}\n\n'
                    "event: done\ndata: {}\n\n",
                }
            }
        }
    },
)
async def ask(body: AskRequest, request: Request, principal: PrincipalDep) -> Any:
    """SSE events, in order: `status` {"stage": "loading" | "rewriting" | "retrieving" | "thinking"},
    `evidence` (the best sentence of the top hits, marked `retrieved`: found, not yet an answer; sent
    before any token), `token` pieces, `citations` (the final checked answer), `done`; or `error`."""
    state: AppState = get_state(request)
    kb = await run_in_threadpool(existing_kb, state, body.kb, principal)
    history = history_from(body.history)
    flt = SearchFilter(doc_ids=list(body.doc_ids)) if body.doc_ids else None
    wants_sse = body.stream or "text/event-stream" in request.headers.get("accept", "")
    loading = wants_sse and state.loading
    # errors (no model, no KB) become statuses here, unless the models are still loading: then the
    # stream starts at once with a "loading" status and an error arrives as an `error` event
    pipeline = None if loading else await run_in_threadpool(state.pipeline, kb)
    if not wants_sse:
        result = await answer(pipeline, body.question, history=history, flt=flt, executor=state.answer_pool)
        return answer_json(kb, result)

    async def events() -> AsyncIterator[str]:
        nonlocal pipeline
        try:
            if pipeline is None:
                yield sse("status", {"stage": "loading"})
                pipeline = await run_in_threadpool(state.pipeline, kb)
            stream = stream_answer(
                pipeline, body.question, history=history, flt=flt, executor=state.answer_pool, events=True
            )
            async for item in stream:
                if isinstance(item, Answer):
                    yield sse("citations", answer_json(kb, item))
                elif isinstance(item, Retrieved):
                    yield sse("evidence", evidence_json(item))
                elif isinstance(item, Status):
                    yield sse("status", {"stage": item.stage})
                elif item:
                    yield sse("token", {"text": item})
            yield sse("done", {})
        except Exception as exc:  # noqa: BLE001 - headers are sent: the error travels as an event
            yield error_event(exc)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def evidence_json(item: Retrieved) -> dict[str, Any]:
    return {
        "evidence": [
            {
                "doc": e.doc,
                "doc_id": e.doc_id,
                "page": e.page,
                "text": e.text,
                "chunk_id": e.chunk_id,
                "score": e.score,
                "retrieved": True,
            }
            for e in item.evidence
        ],
        "seconds": item.seconds,
    }
