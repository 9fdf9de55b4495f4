"""The keyword analyzer shared by every store backend: jieba for Chinese, a light English analyzer.

All backends index and query the same tokens, so keyword results agree across faiss/pgvector/milvus.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

_TOKEN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z]+(?:['’][A-Za-z]+)?|\d+(?:[.,]\d+)*")
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_jieba_lock = threading.Lock()

# Small, conservative stop lists: frequent words that only add noise to BM25. rag.text.features.EN_STOP
# (claims) is this list plus words about sources ("document", "according"), which BM25 keeps searchable.
# Changing these lists or tokenize() changes the keyword index: bump rag.store.manifest.ANALYZER_VERSION.
EN_STOP = frozenset(
    "a an the of and or to in on at for by with from as is are was were be been being it its this that these those "
    "what which who whom whose when where why how do does did has have had not no than then there their they them "
    "we our you your he she his her i me my into about over under per".split()
)
ZH_STOP = frozenset(
    "的 了 和 是 在 与 及 或 等 中 对 为 以 之 其 该 这 那 有 也 就 都 而 并 从 被 把 吗 呢 吧 啊 什么 多少 哪些 哪个 如何 怎么 是否".split()
)


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def stem(word: str) -> str:
    """A tiny English suffix stripper: enough to match revenue/revenues, operating/operate."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    return word


def tokenize(text: str) -> list[str]:
    """Text -> keyword tokens (lower-cased, stemmed English; jieba search-mode Chinese words)."""
    out: list[str] = []
    for match in _TOKEN_RE.finditer(text):
        piece = match.group(0)
        if _HAN_RE.fullmatch(piece):
            jieba = _jieba()
            with _jieba_lock:
                words = list(jieba.cut_for_search(piece))
            out.extend(w for w in words if w not in ZH_STOP)
        elif piece[0].isdigit():
            out.append(piece.replace(",", ""))
        else:
            word = piece.lower()
            if word not in EN_STOP and len(word) > 1:
                out.append(stem(word))
    return out
