"""Reusing evaluated prompt prefixes in llama.cpp: on a CPU the prompt, not the answer, is the wait.

llama-cpp-python reuses the KV cache only against the *previous* prompt, so one unrelated call (a
follow-up rewrite, a question in the other language) costs the whole system prompt again. Here a
`llama_cpp.Llama` subclass keeps the KV state of evaluated prompts:

- pinned: the system prefix of each system message (one per language and per task) — the tokens
  every prompt with that message shares, found by tokenizing two probes (`prefix_tokens`) — is
  evaluated alone once per process; every prompt with that message restores exactly that state and
  evaluates the rest in one go. So the same prompt is always computed the same way: greedy answers
  are the same every time (letting a prompt reuse a longer cached prefix would change the shape of
  llama.cpp's batches, and with it the last bits of the logits and, at a near tie, the answer);
- recent: for prompts without a pinned prefix, the last few prompts; the entry sharing the longest
  token prefix is restored, llama.cpp drops the KV cells past it and evaluates the rest. States are the raw llama.cpp state
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


class _Probe(Exception):
    """Stops a probe call at generate(), carrying the prompt's tokens."""

    def __init__(self, tokens: list[int]) -> None:
        super().__init__("probe")
        self.tokens = tokens


def shared_prefix(llm: PrefixCachingLlama, system: str) -> int:
    """How many prompt tokens every prompt with system message `system` shares."""
    a = llm.prompt_tokens([{"role": "system", "content": system}, {"role": "user", "content": "A"}])
    b = llm.prompt_tokens([{"role": "system", "content": system}, {"role": "user", "content": "B"}])
    return _common_prefix(a, b)


class PrefixCachingLlama(llama_cpp.Llama):
    """`Llama` that restores saved KV states of earlier prompts sharing a prefix with the next one.

    `pin_key` and `pin_tokens` (set by the caller before a call: the system message and the length
    of the prefix its prompts share) name the prefix that stays cached for the life of the process.
    After each call `last_prompt_tokens` and `last_evaluated_tokens` say how long the prompt was and
    how many of its tokens llama.cpp evaluated.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pin_key: str | None = None
        self.pin_tokens = 0
        self._probing = False
        self.last_prompt_tokens = 0
        self.last_evaluated_tokens = 0
        self._pinned: dict[str, _Entry] = {}
        self._recent: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._save_next_eval = False
        self._prefix_evaluated = 0

    # -- the two hooks into llama-cpp-python's generation loop -----------------------------------
    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
        tokens = list(tokens)
        if self._probing:
            raise _Probe(tokens)
        self.last_prompt_tokens = len(tokens)
        self.last_evaluated_tokens = 0  # set by the prompt's eval (none when the prompt is fully cached)
        self._save_next_eval = True
        self._prefix_evaluated = 0
        if self.pin_key and 0 < self.pin_tokens < len(tokens):
            self._restore_pinned(self.pin_key, tuple(tokens[: self.pin_tokens]))
        else:
            self._restore_best(tokens)
        return super().generate(tokens, *args, **kwargs)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens `create_chat_completion(messages)` would evaluate, without evaluating them."""
        self._probing = True
        try:
            self.create_chat_completion(messages=messages, max_tokens=1)  # type: ignore[arg-type]
        except _Probe as probe:
            return probe.tokens
        finally:
            self._probing = False
        raise RuntimeError("llama-cpp-python did not reach generate() for a probe")  # pragma: no cover

    def eval(self, tokens: Sequence[int]) -> None:
        if not self._save_next_eval:
            super().eval(tokens)
            return
        # the first eval of a call is the prompt suffix llama.cpp did not find in its KV cache (the
        # rest decode one token each): count it, then keep the state. (llama_perf_context counts
        # decode calls per micro-batch in this version, not tokens, so it is not used.)
        self._save_next_eval = False
        super().eval(tokens)
        self.last_evaluated_tokens = len(tokens) + self._prefix_evaluated
        if not (self.pin_key and self.pin_tokens):
            self._save()

    # -- the cache ---------------------------------------------------------------------------------
    def _entries(self) -> list[_Entry]:
        return [*self._pinned.values(), *self._recent.values()]

    def _restore_pinned(self, key: str, prefix: tuple[int, ...]) -> None:
        """Put the KV cache at exactly `prefix`: restored, or evaluated alone and pinned."""
        entry = self._pinned.get(key)
        if entry is not None and entry.tokens == prefix and self._restore(entry):
            return
        self.n_tokens = 0
        super().eval(prefix)  # alone, from nothing: the state every later prompt starts from
        self._prefix_evaluated = len(prefix)
        if key in self._pinned or len(self._pinned) < MAX_PINNED:
            if (state := self._state()) is not None:
                self._pinned[key] = _Entry(prefix, state)

    def _restore(self, entry: _Entry) -> bool:
        buf = (ctypes.c_uint8 * len(entry.state)).from_buffer_copy(entry.state)
        if llama_cpp.llama_state_set_data(self._ctx.ctx, buf, len(entry.state)) != len(entry.state):
            self.reset()  # a failed restore leaves the KV cache undefined: start from nothing
            return False
        n = len(entry.tokens)
        self.input_ids[:n] = entry.tokens
        self.n_tokens = n
        self._requires_eval = True
        return True

    def _state(self) -> bytes | None:
        size = llama_cpp.llama_state_get_size(self._ctx.ctx)
        buf = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(self._ctx.ctx, buf, size))
        return bytes(memoryview(buf)[:written]) if 0 < written <= int(size) else None

    def _restore_best(self, tokens: list[int]) -> None:
        current = _common_prefix(self.input_ids[: self.n_tokens].tolist(), tokens)
        best, best_len = None, current
        for entry in self._entries():
            n = _common_prefix(entry.tokens, tokens)
            if n > best_len:
                best, best_len = entry, n
        if best is None or best_len - current < MIN_GAIN_TOKENS or not self._restore(best):
            return
        if best.tokens in self._recent:
            self._recent.move_to_end(best.tokens)

    def _save(self) -> None:
        tokens = tuple(int(t) for t in self.input_ids[: self.n_tokens])
        if len(tokens) < MIN_GAIN_TOKENS or (state := self._state()) is None:
            return
        self._recent[tokens] = _Entry(tokens, state)
        self._recent.move_to_end(tokens)
        while self._recent and (len(self._recent) > RECENT_ENTRIES or self.cached_bytes > MAX_BYTES):
            self._recent.popitem(last=False)

    @property
    def cached_bytes(self) -> int:
        return sum(len(e.state) for e in self._entries())

    def clear_prefix_cache(self) -> None:
        self._pinned.clear()
        self._recent.clear()
