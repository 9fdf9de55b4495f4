"""Query translation inside retrieval (rag/retrieval/translate.py): off by default, called only for a
cross-language question, cached, and its rankings fused (a chunk only the translation finds comes up).

The fake translator is an LLM registered through the same registry as the real backends
(rag.llm.GENERATORS) and created by make_generator; the real SmolLM2-135M test beside it checks the
call, the prompt and the cache with a real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storehelp import add

from rag.crosslingual import TRANSLATE_PROMPT
from rag.embedders import make_embedder
from rag.errors import ConfigError
from rag.kb import open_kb
from rag.llm import GENERATORS, make_generator
from rag.protocols import SearchFilter
from rag.retrieval import explain_hit, make_retriever
from rag.settings import RetrievalSettings, Settings, load_settings

TARGET = "碳酸锂供应前景：持续紧张，二〇二三年长单价格上涨百分之三十。"
ENGLISH = [
    "The lithium business segment reported supply chain costs for the year.",
    "What is the outlook? Management expects supply to remain stable next year.",
    "Carbonate rock formations were surveyed near the mine site.",
    "Supply agreements with customers run for three to five years.",
    "The outlook for battery demand in Europe improved in the fourth quarter.",
]
CHINESE = ["公司董事会审议通过了利润分配方案。", "本公司主要产品为光伏组件和电池片。"]
QUESTION = "What is the lithium carbonate supply outlook?"
TRANSLATIONS = {QUESTION: "碳酸锂供应前景如何？", "碳酸锂供应前景如何？": QUESTION}


class FakeTranslator:
    """An LLM that answers the translation prompt from a table and counts its calls."""

    id = "fake-translator"
    context_tokens = 2048

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append(messages)
        assert kwargs["temperature"] == 0.0 and not kwargs["stream"]
        return TRANSLATIONS.get(messages[-1]["content"], "")


@pytest.fixture
def translator(fake_settings: Settings) -> Iterator[FakeTranslator]:
    with GENERATORS.registered("fake-translator", lambda argument, settings: FakeTranslator()):
        generator = make_generator(fake_settings.model_copy(update={"llm": fake_settings.llm.model_copy(update={"name": "fake-translator"})}))  # fmt: skip
        assert isinstance(generator, FakeTranslator)
        yield generator


@pytest.fixture
def fake(fake_settings: Settings):  # type: ignore[no-untyped-def]
    return make_embedder(fake_settings.embedder)


@pytest.fixture
def mixed(fake_settings: Settings, fake):  # type: ignore[no-untyped-def]
    """A KB with English filings and Chinese pages; only one Chinese chunk is about lithium carbonate."""
    store = open_kb(fake_settings, "mixed", fake, create=True)
    for i, text in enumerate(ENGLISH):
        add(store, fake, f"/d/en{i}.pdf", [[text]])
    for i, text in enumerate([*CHINESE, TARGET]):
        add(store, fake, f"/d/zh{i}.pdf", [[text]])
    yield store
    store.close()


def _on(settings: RetrievalSettings) -> RetrievalSettings:
    return settings.model_copy(update={"query_translation": "llm"})


def test_off_by_default_and_on_needs_the_llm(fake_settings: Settings, fake, mixed) -> None:  # type: ignore[no-untyped-def]
    assert RetrievalSettings().query_translation == "off"
    assert load_settings().retrieval.query_translation == "off"
    assert make_retriever(mixed, fake, fake_settings.retrieval).translator is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="query_translation"):
        make_retriever(mixed, fake, _on(fake_settings.retrieval))


def test_translation_rankings_are_fused_and_cached(fake_settings: Settings, fake, mixed, translator) -> None:  # type: ignore[no-untyped-def]
    plain = make_retriever(mixed, fake, fake_settings.retrieval).retrieve(QUESTION, 2)
    assert TARGET not in [h.chunk.text for h in plain.hits] and "translate_ms" not in plain.timings

    retriever = make_retriever(mixed, fake, _on(fake_settings.retrieval), generator=translator)
    found = retriever.retrieve(QUESTION, 2)
    assert len(translator.calls) == 1
    assert translator.calls[0][0]["content"] == TRANSLATE_PROMPT["zh"] and translator.calls[0][1]["content"] == QUESTION
    top = next(h for h in found.hits if h.chunk.text == TARGET)  # only the translation's searches bring it up
    assert top.scores["keyword_translated_rank"] == 1.0 and "dense_translated_rank" in top.scores
    assert "keyword of the translated question #1" in explain_hit(top.scores)
    assert found.timings["translate_ms"] > 0 and "translated_search_ms" in found.timings

    again = retriever.retrieve(QUESTION, 2)  # the same question: the cached translation, no LLM call
    assert len(translator.calls) == 1 and again.timings["translate_ms"] == 0.0
    assert [h.chunk.id for h in again.hits] == [h.chunk.id for h in found.hits]


def test_only_a_cross_language_question_is_translated(fake_settings: Settings, fake, translator) -> None:  # type: ignore[no-untyped-def]
    store = open_kb(fake_settings, "english", fake, create=True)
    try:
        for i, text in enumerate(ENGLISH):
            add(store, fake, f"/d/en{i}.pdf", [[text]])
        retriever = make_retriever(store, fake, _on(fake_settings.retrieval), generator=translator)
        same = retriever.retrieve(QUESTION, 3)  # English question, English-only KB: no LLM call
        assert translator.calls == [] and "translate_ms" not in same.timings
        other = retriever.retrieve("碳酸锂供应前景如何？", 3)  # Chinese question over English pages
        assert len(translator.calls) == 1 and translator.calls[0][0]["content"] == TRANSLATE_PROMPT["en"]
        assert "dense_translated_rank" in other.hits[0].scores or "keyword_translated_rank" in other.hits[0].scores
        dense = make_retriever(store, fake, _on(fake_settings.retrieval).model_copy(update={"mode": "dense"}), generator=translator)  # fmt: skip
        assert "translate_ms" not in dense.retrieve("锂矿的供应", 3).timings  # hybrid mode only
        assert len(translator.calls) == 1
    finally:
        store.close()


def test_the_kb_languages_count_not_only_the_candidates(fake_settings: Settings, fake, mixed, translator) -> None:  # type: ignore[no-untyped-def]
    # One candidate per search: a Chinese question finds only Chinese chunks, yet the KB holds English filings.
    narrow = _on(fake_settings.retrieval).model_copy(update={"candidates": 1})
    found = make_retriever(mixed, fake, narrow, generator=translator).retrieve("碳酸锂供应前景如何？", 1)
    assert found.languages == frozenset({"zh"})
    assert len(translator.calls) == 1 and translator.calls[0][0]["content"] == TRANSLATE_PROMPT["en"]
    assert "translate_ms" in found.timings


def test_a_search_scoped_to_one_language_is_not_translated(fake_settings: Settings, fake, mixed, translator) -> None:  # type: ignore[no-untyped-def]
    english = SearchFilter(doc_ids=[d.id for d in mixed.list_documents() if "/en" in d.source])
    retriever = make_retriever(mixed, fake, _on(fake_settings.retrieval), generator=translator)
    assert "translate_ms" not in retriever.retrieve(QUESTION, 3, english).timings and translator.calls == []
    assert "translate_ms" in retriever.retrieve(QUESTION, 3).timings and len(translator.calls) == 1


def test_translation_counts_for_the_relevance_floor(fake_settings: Settings, fake, mixed, translator) -> None:  # type: ignore[no-untyped-def]
    # A floor no English chunk passes (at most half the question's words): without the translation the English
    # question finds no evidence; the Chinese page holds most of the translation's words.
    strict = fake_settings.retrieval.model_copy(update={"min_score": 1.01, "min_keyword_coverage": 0.7})
    assert make_retriever(mixed, fake, strict).retrieve(QUESTION, 3).no_evidence
    translated = make_retriever(mixed, fake, _on(strict), generator=translator).retrieve(QUESTION, 3)
    assert not translated.no_evidence and translated.keyword_coverage >= 0.7


@pytest.mark.slow
def test_real_llm_translates_once_per_question(fake_settings: Settings, fake, mixed, smollm, home: Path) -> None:  # type: ignore[no-untyped-def]
    calls: list[list[dict[str, str]]] = []

    class Spy:
        id = smollm.id
        context_tokens = smollm.context_tokens

        def count_tokens(self, text: str) -> int:
            return smollm.count_tokens(text)

        def generate(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(messages)
            return smollm.generate(messages, **kwargs)

    loads: list[int] = []

    def load() -> Spy:  # the LLM is loaded on the first cross-language question, not before
        loads.append(1)
        return Spy()

    retriever = make_retriever(mixed, fake, _on(fake_settings.retrieval), generator=load)
    assert loads == []
    retriever.retrieve(QUESTION, 3)
    retriever.retrieve(QUESTION, 3)
    assert loads == [1] and len(calls) == 1 and calls[0][0]["content"] == TRANSLATE_PROMPT["zh"]
    text, ms = retriever.translator.translate(QUESTION, "zh")  # type: ignore[attr-defined]
    assert ms == 0.0 and len(calls) == 1  # cached, whatever the 135M model made of it
