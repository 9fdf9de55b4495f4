"""Token counts in the embedder's own tokens, cached per distinct short text."""

from __future__ import annotations

from collections import OrderedDict

from rag.chunking.units import CountTokens

_CACHE_TEXT_MAX = 300  # characters; bounds the token-count cache to a few MB


class TokenCounter:
    """`count_tokens` with a cache, the embedder's fixed per-passage overhead and the size limit."""

    def __init__(self, count_tokens: CountTokens, max_tokens: int, *, cache_size: int = 32_768) -> None:
        self.max_tokens = max_tokens
        self._count_raw = count_tokens
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        # Fixed cost of any passage (special tokens, the embedder's "passage: " prefix).
        self.overhead = max(0, count_tokens("a") - 1)

    def count(self, text: str) -> int:
        """The embedder's token count for `text` as one passage (cached)."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        n = int(self._count_raw(text))
        if len(text) <= _CACHE_TEXT_MAX:  # sentences and headings repeat (running text, boilerplate); chunks rarely
            self._cache[text] = n
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return n

    def unit_tokens(self, text: str) -> int:
        """Tokens of `text` inside a chunk: its count without the per-passage overhead (at least 1)."""
        return max(1, self.count(text) - self.overhead)

    def fits(self, text: str, start: int, end: int) -> bool:
        """Whether text[start:end] fits in max_tokens; a long text is judged by a prefix first (counts only
        grow), so a 12 MB sentence is not tokenized whole just to learn that it must be split."""
        probe = 8 * self.max_tokens  # characters: more than any max_tokens tokens cover in practice
        if end - start > probe and self.count(text[start : start + probe]) > self.max_tokens:
            return False
        return self.count(text[start:end]) <= self.max_tokens
