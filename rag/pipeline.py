"""The question-answering pipeline: (rewrite follow-up) -> retrieve -> refuse or prompt -> generate -> verify.

`ask_stream` yields the model's text pieces as they are generated and then the final `Answer`, whose
citations were verified after the stream ended (its text can differ from the streamed text: markers
are renumbered, dropped or added, and an answer nothing verifies is replaced by an explanation).
With `events=True` it also yields `Status` (what the answer is waiting for) and, as soon as retrieval
is done, `Retrieved` (the best sentence of the top hits) so a user sees evidence within retrieval
time instead of waiting for the prompt to be read. `ask` collects the stream. No LLM is called when
retrieval finds no evidence.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from rag.crosslingual import merge, other_language, translate_question
from rag.errors import InvalidRequest
from rag.evidence import best_sentences
from rag.grounding import Grounder, citation_for
from rag.lang import detect_language
from rag.prompting import REFUSAL, build_prompt
from rag.protocols import Embedder, Generator, Message, Retriever, SearchFilter, Store
from rag.records import Answer, Citation, Evidence, EvidenceUnit, Hit, Retrieved, Status
from rag.rewrite import rewrite_question
from rag.settings import Settings
from rag.support import SupportChecker
from rag.text.sentences import split_sentences
from rag.units import PageLocator

UNVERIFIED = {
    "en": "The documents do not clearly answer this: none of the model's statements could be verified against "
    "the retrieved passages, so no answer is shown.",
    "zh": "文档中没有找到可以核实的答案：模型给出的内容都无法在检索到的资料中得到验证，因此不显示该回答。",
}
PASSAGES_LABEL = {
    "en": "Passages that may bear on the question (found by search; not an answer):",
    "zh": "以下段落可能与问题相关（检索所得，并非回答）：",
}
# Stop when the model starts echoing the prompt's own structure instead of answering.
STOP = ["<source", "</source>", "\nQuestion:", "\n问题：", "\nSources:", "\n资料：", "<|im_end|>", "<|endoftext|>"]
REPEAT_WINDOW = 3  # the same sentence this many times in a row ends the generation
MAX_QUESTION_CHARS = 4000
EVIDENCE_SHOWN = 3  # hits shown as retrieved evidence before the answer


def is_looping(text: str, window: int = REPEAT_WINDOW) -> bool:
    """True when the last `window` sentences are the same sentence (small models fall into loops)."""
    sentences = [text[a:b].strip() for a, b in split_sentences(text)]
    tail = sentences[-window:]
    return len(tail) == window and len(set(tail)) == 1 and len(tail[0]) > 3


class QAPipeline:
    """Answers questions over one knowledge base with verified citations."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        generator: Generator,
        settings: Settings,
        retriever: Retriever | None = None,
    ) -> None:
        if retriever is None:
            from rag.retrieval import make_retriever

            retriever = make_retriever(store, embedder, settings.retrieval, generator=generator)
        self.store = store
        self.embedder = embedder
        self.generator = generator
        self.settings = settings
        self.retriever = retriever

    def ask(self, question: str, history: list[Message] | None = None, flt: SearchFilter | None = None) -> Answer:
        """Answer `question` (a follow-up is made standalone from `history` first)."""
        answer: Answer | None = None
        for item in self.ask_stream(question, history, flt):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None  # ask_stream always ends with an Answer
        return answer

    def ask_stream(
        self,
        question: str,
        history: list[Message] | None = None,
        flt: SearchFilter | None = None,
        *,
        events: bool = False,
    ) -> Iterator[str | Answer | Status | Retrieved]:
        """Yield text pieces as the model produces them, then the final verified Answer.

        `events=True` adds `Status` items and the `Retrieved` evidence before the first piece."""
        question = (question or "").strip()
        if not question:
            raise InvalidRequest("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidRequest(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        lang = detect_language(question)
        standalone = question
        if history:
            if events:
                yield Status("rewriting")
            standalone = rewrite_question(question, history, self.generator)
            timings["rewrite"] = time.perf_counter() - t0

        if events:
            yield Status("retrieving")
        t = time.perf_counter()
        retrieval = self.retriever.retrieve(standalone, self.settings.retrieval.top_k, flt)
        timings["retrieve"] = time.perf_counter() - t
        translated = ""
        translator = getattr(self.retriever, "translator", None)
        target = None
        if translator is not None:  # retrieval translated a cross-language question already (query_translation)
            if "translate_ms" in retrieval.timings:
                translated = translator.translate(standalone, "zh" if lang == "en" else "en")[0] or ""
        elif self.settings.retrieval.translate and self.generator:
            target = other_language(lang, retrieval)
        if target is not None:
            if events:
                yield Status("translating")
            t = time.perf_counter()
            translated = translate_question(standalone, target, self.generator) or ""
            if translated:
                again = self.retriever.retrieve(translated, self.settings.retrieval.top_k, flt)
                retrieval = merge(retrieval, again, self.settings.retrieval.top_k, self.settings.retrieval.rrf_k)
            timings["translate"] = time.perf_counter() - t
        if events and retrieval.hits and not retrieval.no_evidence:
            yield Retrieved(self.evidence(standalone, retrieval.hits), time.perf_counter() - t0)
            timings["evidence"] = time.perf_counter() - t0
        if retrieval.no_evidence or not retrieval.hits:
            text = REFUSAL[lang]
            yield text
            timings["total"] = time.perf_counter() - t0
            yield Answer(text=text, refused=True, timings=timings, question=standalone)
            return

        t = time.perf_counter()
        llm = self.settings.llm
        context = min(self.generator.context_tokens, llm.context_tokens)
        prompt = build_prompt(
            standalone,
            retrieval.hits,
            self.generator.count_tokens,
            context_tokens=context,
            max_answer_tokens=llm.max_answer_tokens,
            lang=lang,
            context_budget=llm.context_budget,
            page_text=self.store.page_text,
        )
        timings["prompt"] = time.perf_counter() - t
        timings["prompt_tokens"] = float(prompt.prompt_tokens)
        if events:
            yield Status("thinking")

        g = self.settings.grounding
        checker = SupportChecker(standalone, prompt.units, self.embedder, g.bars(), words_from=translated)
        grounder = Grounder(checker, prompt.units, g.auto_cite)
        t = first = time.perf_counter()
        pieces: list[str] = []
        stream = self.generator.generate(
            prompt.messages, stream=True, max_tokens=llm.max_answer_tokens, temperature=llm.temperature, stop=STOP
        )
        try:
            for piece in stream:
                if not pieces:
                    first = time.perf_counter()
                    timings["first_token"] = first - t0
                pieces.append(piece)
                if shown := grounder.feed(piece):
                    timings.setdefault("first_shown", time.perf_counter() - t0)
                    yield shown
                if piece and piece[-1] in ".。!！?？\n" and is_looping("".join(pieces)):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # releases the model lock when the caller or the loop guard stops early
        end = time.perf_counter()
        timings["generate"] = end - t
        usage = getattr(self.generator, "last_usage", None)
        if isinstance(usage, dict) and usage.get("prompt_tokens"):  # llama.cpp: what it really evaluated
            timings["prompt_eval_tokens"] = float(usage["evaluated_tokens"])
        raw = "".join(pieces)
        completion_tokens = self.generator.count_tokens(raw) if raw else 0
        timings["completion_tokens"] = float(completion_tokens)
        if completion_tokens > 1 and end > first:  # decode speed: tokens after the first over their time
            timings["tokens_per_s"] = (completion_tokens - 1) / (end - first)

        t = time.perf_counter()
        if rest := grounder.finish():
            timings.setdefault("first_shown", time.perf_counter() - t0)
            yield rest
        answer = Answer(
            text=grounder.text,
            citations=grounder.citations,
            sources=prompt.sources,
            unsupported=list(dict.fromkeys(grounder.unsupported)),
            question=standalone,
            units=prompt.units,
            draft=raw,
        )
        if not grounder.citations:
            answer.refused = True
            answer.evidence = self.passages(grounder)
            answer.text = self.refusal_text(
                lang, answer.evidence, unverified=grounder.content_sentences > 0 and not grounder.refusal
            )
            if not answer.unsupported and raw.strip() and not grounder.refusal and grounder.content_sentences:
                answer.unsupported = [raw.strip()]
            yield answer.text
        timings["verify"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        answer.timings = timings
        yield answer

    def passages(self, grounder: Grounder) -> list[Citation]:
        """The best units, when retrieval found strong evidence although nothing verified: shown as
        passages, so a user reads what was found instead of a bare refusal."""
        g = self.settings.grounding
        scored = []
        for unit in grounder.units:
            if not unit.citable:
                continue
            coverage, similarity = grounder.checker.relevance(unit)
            if coverage >= g.passage_lexical or (similarity is not None and similarity >= g.passage_semantic):
                scored.append((coverage + (similarity or 0.0), -unit.n, unit))
        scored.sort(reverse=True)
        return [citation_for(unit) for *_, unit in scored[: g.passages]]

    @staticmethod
    def refusal_text(lang: str, evidence: list[Citation], *, unverified: bool) -> str:
        text = UNVERIFIED[lang] if unverified else REFUSAL[lang]
        if not evidence:
            return text
        lines = [text, PASSAGES_LABEL[lang]]
        lines += [f"[{c.n}] “{c.quote.strip()}” ({c.doc}, p. {c.page})" for c in evidence]
        return "\n".join(lines)

    def evidence(self, question: str, hits: list[Hit], limit: int = EVIDENCE_SHOWN) -> list[Evidence]:
        """The best sentence of each of the top hits, with the page it stands on."""
        out: list[Evidence] = []
        locator = PageLocator(self.store.page_text)
        for hit, sentence in zip(hits[:limit], best_sentences(question, hits[:limit])):
            chunk = hit.chunk
            page = chunk.page_start
            if chunk.page_end > chunk.page_start:  # only a chunk over a page break needs a look
                page, _ = locator.find(hit, sentence[:40], max(0, chunk.char_start))
            out.append(Evidence(chunk.doc or chunk.doc_id, chunk.doc_id, page, sentence, chunk.id, hit.score))
        return out


def citation_to_dict(c: Citation) -> dict[str, Any]:
    return {
        "n": c.n,
        "doc": c.doc,
        "page": c.page,
        "quote": c.quote,
        "verified": c.verified,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "chunk_id": c.chunk_id,
        "doc_id": c.doc_id,
    }


def unit_to_dict(unit: EvidenceUnit) -> dict[str, Any]:
    """A numbered passage of the prompt: its `n` is the `[n]` of the answer and its citations."""
    return {
        "n": unit.n,
        "doc": unit.doc,
        "doc_id": unit.doc_id,
        "page": unit.page,
        "text": unit.text,
        "kind": unit.kind,
        "score": unit.score,
        "chunk_id": unit.chunk_id,
        "char_start": unit.char_start,
        "char_end": unit.char_end,
    }


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    """The JSON shape of an answer (CLI `ask --json`, server `/v1/ask`): `sources` are the numbered
    passages the model was shown, in the answer's own numbering; `evidence` the passages shown with
    a refusal."""
    return {
        "answer": answer.text,
        "refused": answer.refused,
        "citations": [citation_to_dict(c) for c in answer.citations if c.verified],
        "sources": [unit_to_dict(u) for u in answer.units if u.n > 0],
        "evidence": [citation_to_dict(c) for c in answer.evidence],
        "unsupported": list(answer.unsupported),
        "timings": dict(answer.timings),
    }
