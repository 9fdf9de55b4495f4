"""Query translation inside retrieval: a cross-language question also searches with its translation.

With `retrieval.query_translation = "llm"`, a question in one language over a knowledge base that
holds the other (an English question over Chinese pages, or the reverse) is translated by the local
LLM (rag.crosslingual.translate_question: one short greedy call), and the translation's dense and
keyword searches join the fusion as two more rankings ("dense_translated", "keyword_translated"), so
page fusion, periods and the floor see them like any other ranking.

Which languages the KB holds: the language of each document's first page with text, kept per document
id and refreshed at most every KB_LANGUAGES_TTL_S (a refresh reads only documents not seen before),
plus the languages of the question's own candidates (a document added a second ago counts at once).
The candidates alone are not enough: in a mixed KB a Chinese question's 80 candidates are all Chinese
(the embedder and BM25 both favour the question's language) even when its answer is in an English
filing. A KB in one language never calls the LLM. Translations are cached in memory per (question,
target language, LLM id); a miss costs one generation (~1-5 s on two cores), reported as `translate_ms`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.crosslingual import other_language, translate_question
from rag.errors import CiteqaError
from rag.lang import detect_language
from rag.protocols import Embedder, Generator, Retrieval, SearchFilter, Store
from rag.records import DocumentInfo, Hit
from rag.retrieval.fusion import Weight
from rag.retrieval.hybrid import KEYWORD_FLOOR_HITS, keyword_coverage
from rag.settings import RetrievalSettings

CACHE_SIZE = 1024  # translations kept in memory (a question is ~100 bytes: the cache is tiny)
KB_LANGUAGES_TTL_S = 60.0  # how stale the KB's language list may be (list_documents costs ms at 10k docs)
FIRST_PAGES = 3  # pages looked at for a document's language (a cover page may be blank)

GeneratorSource = Generator | Callable[[], Generator]  # the LLM, or a function that loads it on first use


@dataclass
class Translation:
    """What the translated question found: its extra rankings and its side of the relevance floor."""

    text: str
    target: str
    rankings: list[tuple[str, Weight, list[Hit]]] = field(default_factory=list)
    best_score: float = 0.0  # best dense cosine of the translation
    keyword_coverage: float = 0.0  # best keyword hit's share of the translation's content words
    translate_ms: float = 0.0  # LLM time (~0 when cached)
    search_ms: float = 0.0  # the translation's embedding and two searches


class QueryTranslator:
    """Translates cross-language questions with the LLM (cached) and searches with the translation."""

    def __init__(self, generator: GeneratorSource, cache_size: int = CACHE_SIZE) -> None:
        self._source = generator
        self._generator: Generator | None = None
        self._cache: OrderedDict[tuple[str, str, str], str | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._doc_languages: dict[str, str] = {}  # document id -> "en" / "zh"
        self._languages_at = float("-inf")

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            source = self._source
            self._generator = source if hasattr(source, "generate") else source()  # type: ignore[operator]
        return self._generator

    def translate(self, question: str, target: str) -> tuple[str | None, float]:
        """(the question in `target`, or None when the model gave nothing usable; ms spent in the LLM)."""
        key = (question.strip(), target, self.generator.id)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], 0.0
        t = time.perf_counter()
        text = translate_question(question, target, self.generator)
        ms = (time.perf_counter() - t) * 1000
        with self._lock:
            self._cache[key] = text  # an unusable answer is cached too: asking again gives the same (greedy)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return text, ms

    def kb_languages(self, store: Store, flt: SearchFilter | None = None) -> frozenset[str]:
        """The languages of the KB's documents, or of those `flt` searches (refreshed every KB_LANGUAGES_TTL_S)."""
        now = time.monotonic()
        if now - self._languages_at >= KB_LANGUAGES_TTL_S:
            docs = store.list_documents()
            known = {d.id: self._doc_languages.get(d.id) or _first_page_language(store, d) for d in docs}
            with self._lock:
                self._doc_languages, self._languages_at = known, now
        langs = self._doc_languages
        ids = flt.doc_ids if flt is not None and flt.doc_ids else langs
        return frozenset(langs[i] for i in ids if langs.get(i))

    def search(
        self,
        question: str,
        candidates: list[Hit],
        store: Store,
        embedder: Embedder,
        settings: RetrievalSettings,
        pool: int,
        flt: SearchFilter | None,
    ) -> Translation | None:
        """The translation's rankings when the KB (or the candidates) hold the other language; else None."""
        languages = self.kb_languages(store, flt) | {detect_language(h.chunk.text) for h in candidates}
        target = other_language(detect_language(question), Retrieval(hits=[], languages=languages))
        if target is None:
            return None
        text, ms = self.translate(question, target)
        if not text:
            return None
        t = time.perf_counter()
        w = settings.translated_weight
        dense = store.dense_search(embedder.embed_query(text), pool, flt)
        keyword = store.keyword_search(text, pool, flt)
        return Translation(
            text=text,
            target=target,
            rankings=[
                ("dense_translated", settings.dense_weight * w, dense),
                ("keyword_translated", settings.keyword_weight * w, keyword),
            ],
            best_score=max((h.score for h in dense), default=0.0),
            keyword_coverage=keyword_coverage(text, keyword[:KEYWORD_FLOOR_HITS]),
            translate_ms=ms,
            search_ms=(time.perf_counter() - t) * 1000,
        )


def _first_page_language(store: Store, doc: DocumentInfo) -> str:
    """The language of the document's first page with text ("" when its first pages have none)."""
    for page in range(1, min(doc.pages, FIRST_PAGES) + 1):
        try:
            text = store.page_text(doc.id, page)
        except CiteqaError:  # removed meanwhile, or a backend without page text
            return ""
        if text.strip():
            return detect_language(text)
    return ""
