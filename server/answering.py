"""Run the QA pipeline for an async route: one worker thread per answer, pieces handed to the event loop.

The whole `ask_stream` iteration happens in one thread (llama.cpp's lock is held across pieces), and
a request that goes away (client disconnect, time limit) stops the generation at the next piece, so
the model is free for the next request in the queue; one still waiting for the model leaves the queue
(server.llm_queue.cancel_on) and never runs it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rag.protocols import Message, SearchFilter
from rag.records import Answer
from server.llm_queue import cancel_on

_END = object()


async def stream_answer(
    pipeline: Any,
    question: str,
    *,
    history: list[Message] | None,
    flt: SearchFilter | None,
    executor: ThreadPoolExecutor,
    events: bool = False,
) -> AsyncIterator[Any]:
    """Text pieces as the LLM writes them, then the final Answer (errors are re-raised here).

    `events=True` passes the pipeline's Status and Retrieved items through as well."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed (server shutting down): nobody is listening
            stop.set()

    def produce() -> None:
        with cancel_on(stop):  # a request gone while waiting for the model never runs it
            iterator = (
                pipeline.ask_stream(question, history=history or None, flt=flt, events=True)
                if events
                else pipeline.ask_stream(question, history=history or None, flt=flt)
            )
            try:
                for item in iterator:
                    put("item", item)
                    if stop.is_set():
                        break
            except BaseException as exc:  # noqa: BLE001 - handed to the request, which maps it to an HTTP error
                put("error", exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()  # releases the model if we stopped early
                put("end", _END)

    loop.run_in_executor(executor, produce)
    try:
        while True:
            kind, value = await items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


async def answer(
    pipeline: Any,
    question: str,
    *,
    history: list[Message] | None,
    flt: SearchFilter | None,
    executor: ThreadPoolExecutor,
) -> Answer:
    """The final Answer (generated through the same cancellable stream)."""
    final: Answer | None = None
    async for item in stream_answer(pipeline, question, history=history, flt=flt, executor=executor):
        if isinstance(item, Answer):
            final = item
    if final is None:
        from rag.errors import GenerationError

        raise GenerationError("the QA pipeline ended without an answer")
    return final


def answer_payload(result: Answer) -> dict[str, Any]:
    """The JSON of an answer (rag.pipeline.answer_to_dict: citations and sources carry `doc_id`,
    which the page-image URL needs)."""
    from rag.pipeline import answer_to_dict

    return answer_to_dict(result)


def history_from(messages: list[Any]) -> list[Message]:
    """OpenAI-style messages -> the pipeline's history (user and assistant turns only)."""
    out: list[Message] = []
    for m in messages:
        role = m.role if hasattr(m, "role") else m.get("role")
        text = m.text() if hasattr(m, "text") else str(m.get("content") or "")
        if role in {"user", "assistant"} and text.strip():
            out.append({"role": role, "content": text})
    return out
