"""Prompt prefixes evaluated once (rag.llm.kv_cache), with the real SmolLM2 in llama.cpp."""

from __future__ import annotations

import pytest

from rag.llm.llama_cpp import LlamaCppGenerator
from rag.llm.models import smollm2_path
from rag.prompting import SYSTEM_PROMPTS
from rag.settings import LLMSettings

pytestmark = pytest.mark.slow


@pytest.fixture
def gen() -> LlamaCppGenerator:
    # its own instance: the session-wide `smollm` carries other tests' cached prefixes
    # one thread: on a shared 2-core machine spinning llama.cpp threads make these calls several times slower
    settings = LLMSettings(name="smollm2-135m", context_tokens=2048, threads=1)
    return LlamaCppGenerator(smollm2_path(), settings, name="smollm2-135m")


def ask(gen: LlamaCppGenerator, system: str, user: str) -> dict[str, int]:
    gen.generate(
        [{"role": "system", "content": system}, {"role": "user", "content": user}], max_tokens=4, temperature=0.0
    )
    return gen.last_usage


def test_system_prefix_is_evaluated_once_even_after_unrelated_calls(gen: LlamaCppGenerator) -> None:
    en, zh = SYSTEM_PROMPTS["en"], SYSTEM_PROMPTS["zh"]
    first = ask(gen, en, "Sources:\nRevenue was $5 million.\n\nQuestion: What was revenue?")
    assert first["evaluated_tokens"] == first["prompt_tokens"]  # a fresh model evaluates everything
    system_tokens = gen.count_tokens(en)
    # an unrelated call in between (the other language, then a rewrite-like prompt) ...
    ask(gen, zh, "资料：\n营业收入为3.2亿元。\n\n问题：营业收入是多少？")
    ask(gen, "Rewrite the user's last question.", "Conversation:\nuser: hi")
    # ... and the English system prefix is restored, not evaluated again
    again = ask(gen, en, "Sources:\nCosts rose to $2 million in 2023.\n\nQuestion: What were the costs?")
    assert again["evaluated_tokens"] <= again["prompt_tokens"] - system_tokens
    zh_again = ask(gen, zh, "资料：\n公司成立于2001年。\n\n问题：公司成立于哪一年？")
    assert zh_again["evaluated_tokens"] <= zh_again["prompt_tokens"] - gen.count_tokens(zh)


def test_the_same_prompt_is_computed_the_same_way_every_time(gen: LlamaCppGenerator) -> None:
    """Greedy answers must not depend on what ran before: each prompt restores exactly its system
    prefix and evaluates the rest in one go, even when the KV cache holds the very same prompt."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPTS["en"]},
        {
            "role": "user",
            "content": "Sources:\n[1] ACME reported revenue of $52.4 million in 2023.\n\nQuestion: What revenue did ACME report?",
        },
    ]
    first = gen.generate(messages, max_tokens=24, temperature=0.0)
    first_usage = dict(gen.last_usage)
    again = gen.generate(messages, max_tokens=24, temperature=0.0)  # the whole prompt is in the KV cache now
    again_usage = dict(gen.last_usage)
    ask(gen, SYSTEM_PROMPTS["zh"], "资料：\n营业收入为3.2亿元。\n\n问题：营业收入是多少？")
    third = gen.generate(messages, max_tokens=24, temperature=0.0)
    assert first == again == third
    prefix = gen._prefixes[SYSTEM_PROMPTS["en"]]
    assert first_usage["evaluated_tokens"] == first_usage["prompt_tokens"]  # prefix alone, then the rest
    assert (
        again_usage["evaluated_tokens"] == gen.last_usage["evaluated_tokens"] == again_usage["prompt_tokens"] - prefix
    )
    assert prefix >= gen.count_tokens(SYSTEM_PROMPTS["en"])


def test_restored_prefix_gives_a_working_generation(gen: LlamaCppGenerator) -> None:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPTS["en"]},
        {
            "role": "user",
            "content": "Sources:\nThe capital of France is Paris.\n\nQuestion: What is the capital of France?",
        },
    ]
    gen.generate(messages, max_tokens=8, temperature=0.0)
    ask(gen, "Unrelated system.", "Unrelated text that replaces the KV cache.")
    text = gen.generate(messages, max_tokens=16, temperature=0.0)
    assert isinstance(text, str) and "Paris" in text
    assert gen.last_usage["evaluated_tokens"] < gen.last_usage["prompt_tokens"]
    assert 0 < gen._llm.cached_bytes < 256 << 20


LONG = "Sources:\n" + " ".join(
    f"Fact {i}: the plant in district {i} produced {i * 7} tonnes of steel." for i in range(12)
)


def user_only(gen: LlamaCppGenerator, question: str) -> dict[str, int]:
    """A prompt without a system message: no pinned prefix, the recent-prompts cache serves it."""
    gen.generate([{"role": "user", "content": f"{LONG}\n\nQuestion: {question}"}], max_tokens=2, temperature=0.0)
    return gen.last_usage


def test_recent_prompts_are_restored_after_an_unrelated_call(gen: LlamaCppGenerator) -> None:
    first = user_only(gen, "How much did district 3 produce?")
    assert first["evaluated_tokens"] == first["prompt_tokens"]
    ask(gen, "Unrelated system.", "Unrelated text that replaces the KV cache.")
    again = user_only(gen, "How much did district 9 produce?")  # shares LONG with the first prompt
    shared = gen.count_tokens(LONG)
    assert again["evaluated_tokens"] <= again["prompt_tokens"] - shared + 8, (again, shared)


def test_recent_cache_is_bounded_by_entries_and_bytes(gen: LlamaCppGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.llm.kv_cache as kv_cache

    llm = gen._llm
    for i in range(kv_cache.RECENT_ENTRIES + 2):
        gen.generate([{"role": "user", "content": f"Prompt number {i}: {'word ' * (10 + i)}"}], max_tokens=1)
    assert len(llm._recent) == kv_cache.RECENT_ENTRIES  # the oldest went first
    one = max(len(e.state) for e in llm._recent.values())
    monkeypatch.setattr(kv_cache, "MAX_BYTES", one + len(b"".join(e.state for e in llm._pinned.values())))
    user_only(gen, "How much did district 1 produce?")
    assert len(llm._recent) < kv_cache.RECENT_ENTRIES and llm.cached_bytes <= kv_cache.MAX_BYTES  # bytes bound
    llm.clear_prefix_cache()
    assert llm.cached_bytes == 0 and not llm._recent and not llm._pinned
