"""The one place a generation call's defaults come from: the LLM settings."""

from __future__ import annotations

from rag.settings import LLMSettings


def sampling(settings: LLMSettings, max_tokens: int | None, temperature: float | None) -> tuple[int, float]:
    """A call's answer length and temperature: what the caller asked for, else `llm.max_answer_tokens`
    and `llm.temperature` (0 = greedy), so a caller that passes nothing gets what the user configured."""
    return (
        settings.max_answer_tokens if max_tokens is None else max_tokens,
        settings.temperature if temperature is None else temperature,
    )
