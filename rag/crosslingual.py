"""Questions asked in one language about documents in the other: retrieve with a translation too.

The bundled embedder is multilingual but weak across languages, and keyword search cannot match an
English question to Chinese text at all. When the knowledge base holds text in the other language
than the question (some retrieval candidate is in it), the model translates the question (one short greedy call, ~1-2 s on
two cores) and retrieval runs again with the translation; the two rankings are fused (RRF). The
support check then reads the question's words from the translation, which is in the language of
the passages. A knowledge base in one language never pays for it.
"""

from __future__ import annotations

import re

from rag.lang import cjk_ratio, detect_language
from rag.protocols import Generator, Retrieval
from rag.retrieval.fusion import rrf_fuse

TRANSLATE_MAX_TOKENS = 96
TRANSLATE_PROMPT = {
    "zh": "Translate the user's question into Simplified Chinese. Keep names, numbers and technical terms. "
    "Output only the translated question.",
    "en": "把用户的问题翻译成英文，保留名称、数字和术语。只输出译文。",
}


def other_language(lang: str, retrieval: Retrieval) -> str | None:
    """The language to translate a `lang` question into, when the knowledge base holds text in it
    (as far as retrieval's candidates show: an English-only KB never pays for a translation)."""
    seen = retrieval.languages or frozenset(detect_language(h.chunk.text) for h in retrieval.hits)
    target = "zh" if lang == "en" else "en"
    return target if target in seen else None


def translate_question(question: str, target: str, generator: Generator) -> str | None:
    """The question in `target` ("zh" or "en"), or None when the model gave nothing usable."""
    messages = [{"role": "system", "content": TRANSLATE_PROMPT[target]}, {"role": "user", "content": question.strip()}]
    out = str(generator.generate(messages, stream=False, max_tokens=TRANSLATE_MAX_TOKENS, temperature=0.0, stop=["\n"]))
    text = re.sub(r"^(translation|译文|翻译)\s*[:：]\s*", "", out.strip().strip('"“”'), flags=re.IGNORECASE).strip()
    wanted = cjk_ratio(text) > 0.3 if target == "zh" else cjk_ratio(text) < 0.1
    return text if text and wanted and text != question.strip() else None


def merge(first: Retrieval, second: Retrieval, k: int, rrf_k: int) -> Retrieval:
    """Both retrievals' hits fused by rank; evidence if either found some."""
    hits = rrf_fuse([("question", 1.0, first.hits), ("translation", 1.0, second.hits)], rrf_k)[:k]
    return Retrieval(
        hits=hits,
        no_evidence=first.no_evidence and second.no_evidence,
        best_score=max(first.best_score, second.best_score),
        timings={**first.timings, **{f"translated_{key}": v for key, v in second.timings.items()}},
        keyword_coverage=max(first.keyword_coverage, second.keyword_coverage),
    )
