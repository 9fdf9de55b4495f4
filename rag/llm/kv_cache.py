"""Reusing evaluated prompt prefixes in llama.cpp: on a CPU the prompt, not the answer, is the wait.

llama-cpp-python reuses the KV cache only against the *previous* prompt, so one unrelated call (a
follow-up rewrite, a question in the other language) costs the whole system prompt again. Here a
`llama_cpp.Llama` subclass keeps the KV state of evaluated prompts:

- pinned: the first prompt seen with each system message (one per language and per task), so the
  fixed system prefix is evaluated once per process and every later request restores it;
- recent: the last few prompts, so a chat turn whose prompt extends an earlier one (the rewriter's
  conversation grows turn by turn) evaluates only what is new.

Before a prompt is evaluated the entry sharing its longest token prefix is restored; llama.cpp then
drops the KV cells past the shared prefix and evaluates the rest. States are the raw llama.cpp state
(KV cells in use, ~28 KB per token for Qwen2.5-1.5B) without llama-cpp-python's `LlamaState`, which
also copies n_batch x vocabulary logits (~311 MB for a 152k vocabulary) that a prompt suffix
recomputes anyway.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp

RECENT_ENTRIES = 4
MAX_PINNED = 8  # system prompts are few (answer and rewrite, per language); never grow without bound
MAX_BYTES = 256 << 20  # all saved states together; the oldest recent entries go first
MIN_GAIN_TOKENS = 8  # restoring costs a copy of the state: not worth it for a few tokens


@dataclass(slots=True)
class _Entry:
    tokens: tuple[int, ...]
    state: bytes


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCachingLlama(llama_cpp.Llama):
    """`Llama` that restores saved KV states of earlier prompts sharing a prefix with the next one.

    `pin_key` (set by the caller before a call, e.g. the system message) names the prompt family
    whose first prompt stays cached for the life of the process. After each call `last_prompt_tokens`
    and `last_evaluated_tokens` say how long the prompt was and how many of its tokens llama.cpp
    evaluated.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pin_key: str | None = None
        self.last_prompt_tokens = 0
        self.last_evaluated_tokens = 0
        self._pinned: dict[str, _Entry] = {}
        self._recent: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._save_next_eval = False
        self._pending_pin: str | None = None

    # -- the two hooks into llama-cpp-python's generation loop -----------------------------------
    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
        tokens = list(tokens)
        self._restore_best(tokens)
        self.last_prompt_tokens = len(tokens)
        self.last_evaluated_tokens = 0  # set by the prompt's eval (none when the prompt is fully cached)
        self._save_next_eval = True
        new_pin = self.pin_key and self.pin_key not in self._pinned and len(self._pinned) < MAX_PINNED
        self._pending_pin = self.pin_key if new_pin else None
        return super().generate(tokens, *args, **kwargs)

    def eval(self, tokens: Sequence[int]) -> None:
        if not self._save_next_eval:
            super().eval(tokens)
            return
        # the first eval of a call is the prompt suffix llama.cpp did not find in its KV cache (the
        # rest decode one token each): count it, then keep the state. (llama_perf_context counts
        # decode calls per micro-batch in this version, not tokens, so it is not used.)
        self._save_next_eval = False
        super().eval(tokens)
        self.last_evaluated_tokens = len(tokens)
        self._save()

    # -- the cache ---------------------------------------------------------------------------------
    def _entries(self) -> list[_Entry]:
        return [*self._pinned.values(), *self._recent.values()]

    def _restore_best(self, tokens: list[int]) -> None:
        current = _common_prefix(self.input_ids[: self.n_tokens].tolist(), tokens)
        best, best_len = None, current
        for entry in self._entries():
            n = _common_prefix(entry.tokens, tokens)
            if n > best_len:
                best, best_len = entry, n
        if best is None or best_len - current < MIN_GAIN_TOKENS:
            return
        buf = (ctypes.c_uint8 * len(best.state)).from_buffer_copy(best.state)
        if llama_cpp.llama_state_set_data(self._ctx.ctx, buf, len(best.state)) != len(best.state):
            self.reset()  # a failed restore leaves the KV cache undefined: start from nothing
            return
        n = len(best.tokens)
        self.input_ids[:n] = best.tokens
        self.n_tokens = n
        self._requires_eval = True
        if best.tokens in self._recent:
            self._recent.move_to_end(best.tokens)

    def _save(self) -> None:
        tokens = tuple(int(t) for t in self.input_ids[: self.n_tokens])
        if len(tokens) < MIN_GAIN_TOKENS:
            return
        size = llama_cpp.llama_state_get_size(self._ctx.ctx)
        buf = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(self._ctx.ctx, buf, size))
        if written <= 0 or written > int(size):
            return
        entry = _Entry(tokens, bytes(memoryview(buf)[:written]))
        if self._pending_pin is not None:
            self._pinned[self._pending_pin] = entry
            self._pending_pin = None
        else:
            self._recent[tokens] = entry
            self._recent.move_to_end(tokens)
        while self._recent and (len(self._recent) > RECENT_ENTRIES or self.cached_bytes > MAX_BYTES):
            self._recent.popitem(last=False)

    @property
    def cached_bytes(self) -> int:
        return sum(len(e.state) for e in self._entries())

    def clear_prefix_cache(self) -> None:
        self._pinned.clear()
        self._recent.clear()
