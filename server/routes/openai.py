"""OpenAI-compatible API: knowledge bases are models, chat completions carry citations.

Model ids: `citeqa:<kb>` (listed by /v1/models); a bare `<kb>` name works too, and `citeqa` alone means
the default knowledge base. The last user message is the question; earlier user/assistant turns are
history (a follow-up is rewritten into a standalone question). System messages, `temperature` and
`max_tokens` are accepted and ignored: the answer's prompt and sampling are citeqa's own settings.

The answer text carries `[n]` markers; `citations` (on the message, and at the top level) says what
each marker points to. When streaming, deltas are the raw generated text and the final chunk (with
`finish_reason`) carries `citations` and `citeqa.answer`, the text after citation checking.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rag.errors import InvalidRequest
from rag.kb import validate_kb_name
from rag.records import Answer
from server.answering import answer, answer_payload, history_from, stream_answer
from server.auth import Principal, require_api_key
from server.deps import PrincipalDep, StateDep, existing_kb, get_state
from server.routes.ask import SSE_HEADERS, error_event
from server.schemas import ERRORS, ChatCompletion, ChatCompletionRequest, ModelList, sse_event_schema
from server.state import AppState, kb_not_found

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], dependencies=[Depends(require_api_key)], responses=ERRORS)

MODEL_PREFIX = "citeqa:"


def kb_for_model(state: AppState, model: str, principal: Principal) -> str:
    """'citeqa:<kb>' or '<kb>' -> an existing knowledge base ('citeqa' alone = the default KB)."""
    name = model.strip()
    if name in {"", "citeqa"}:
        name = state.settings.paths.default_kb
    elif name.startswith(MODEL_PREFIX):
        name = name[len(MODEL_PREFIX) :]
    try:
        validate_kb_name(name)
    except InvalidRequest:
        raise kb_not_found(name) from None  # any string is a valid model id: one naming no possible KB is unknown
    return existing_kb(state, name, principal)


def _citations(result: Answer) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    data = answer_payload(result)
    return str(data.get("answer", "")), list(data.get("citations", [])), data


def _usage(state: AppState, result: Answer) -> dict[str, int]:
    counter = state.generator.count_tokens if state.generator is not None else (lambda t: len(t) // 4)
    completion = int(counter(result.text)) if result.text else 0
    prompt = int(result.timings.get("prompt_tokens", 0)) if result.timings else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.get("/models", response_model=ModelList, summary="Knowledge bases as models ('citeqa:<kb>')")
def models(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    from rag.kb import list_kbs

    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": f"{MODEL_PREFIX}{kb}", "object": "model", "created": now, "owned_by": "citeqa"}
            for kb in principal.visible(list_kbs(state.settings))  # only the key's own
        ],
    }


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="OpenAI chat completions over a knowledge base, with citations",
    responses={
        200: {
            "description": "A chat completion (JSON), or with `stream: true` Server-Sent Events: "
            "`chat.completion.chunk` objects as `data:` lines, the last one with `finish_reason` and "
            "`citations`, then `data: [DONE]`.",
            "content": {
                "text/event-stream": {
                    "schema": sse_event_schema(["message"]),
                    "example": 'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, '
                    '"delta": {"content": "Revenue"}, "finish_reason": null}]}\n\n'
                    "data: [DONE]\n\n",
                }
            },
        }
    },
)
async def chat_completions(body: ChatCompletionRequest, request: Request, principal: PrincipalDep) -> Any:
    state: AppState = get_state(request)
    kb = await run_in_threadpool(kb_for_model, state, body.model, principal)
    last = body.messages[-1]
    question = last.text().strip()
    if last.role != "user" or not question:
        raise InvalidRequest("the last message must be a non-empty 'user' message: it is the question")
    history = history_from(body.messages[:-1])
    pipeline = await run_in_threadpool(state.pipeline, kb)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = body.model

    if not body.stream:
        result = await answer(pipeline, question, history=history, flt=None, executor=state.answer_pool)
        text, citations, data = _citations(result)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "citations": citations},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(state, result),
            "citations": citations,
            "citeqa": {"kb": kb, "refused": data.get("refused", False), "sources": data.get("sources", [])},
        }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for item in stream_answer(pipeline, question, history=history, flt=None, executor=state.answer_pool):
                if isinstance(item, Answer):
                    text, citations, data = _citations(item)
                    yield chunk(
                        {"citations": citations},
                        "stop",
                        citations=citations,
                        usage=_usage(state, item),
                        citeqa={
                            "kb": kb,
                            "answer": text,
                            "refused": data.get("refused", False),
                            "sources": data.get("sources", []),
                        },
                    )
                elif item:
                    yield chunk({"content": item})
        except Exception as exc:  # noqa: BLE001 - headers are out: report in-band like OpenAI servers do
            yield "data: " + error_event(exc).split("data: ", 1)[1]
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
