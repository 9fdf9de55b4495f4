"""In-process GGUF generation with llama-cpp-python (the offline default)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import GenerationError, ModelNotAvailable
from rag.llm.sampling import sampling
from rag.protocols import Message
from rag.settings import LLMSettings

log = logging.getLogger("citeqa.llm")


def _gpu_offload() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan...)."""
    import llama_cpp

    supports = getattr(llama_cpp, "llama_supports_gpu_offload", None)
    return bool(supports()) if supports is not None else False


class LlamaCppGenerator:
    """One llama.cpp model. Calls are serialised by a lock: a llama context is not thread-safe."""

    def __init__(self, path: Path, settings: LLMSettings, name: str = "") -> None:
        try:
            from rag.llm.kv_cache import PrefixCachingLlama
        except ImportError as exc:
            raise ModelNotAvailable(
                "llama-cpp-python is not installed: run `make install` (or scripts/install_llama.sh PYTHON)"
            ) from exc
        threads = settings.threads or max(1, os.cpu_count() or 1)
        log.info("loading model %s (%.0f MB)…", path.name, path.stat().st_size / 1e6)
        start = time.perf_counter()
        self._llm = PrefixCachingLlama(
            model_path=str(path),
            n_ctx=settings.context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            # Only a GPU build can offload; a CPU build would warn about the request on every load.
            n_gpu_layers=settings.gpu_layers if _gpu_offload() else 0,
            seed=settings.seed,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - start
        self.id: str = name or path.name
        self.path = path
        self.context_tokens: int = settings.context_tokens
        self._settings = settings
        self.lock = threading.Lock()
        self._usage = threading.local()  # per calling thread: the model may serve another request next
        self._prefixes: dict[str, int] = {}  # system message -> tokens its prompts share

    @property
    def last_usage(self) -> dict[str, int]:
        """Prompt tokens of this thread's last call and how many of them llama.cpp actually evaluated."""
        return dict(getattr(self._usage, "value", {}))

    def _record_usage(self) -> None:
        self._usage.value = {
            "prompt_tokens": self._llm.last_prompt_tokens,
            "evaluated_tokens": self._llm.last_evaluated_tokens,
        }

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str | Iterator[str]:
        max_tokens, temperature = sampling(self._settings, max_tokens, temperature)
        kwargs: dict[str, Any] = dict(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop or None,
            seed=self._settings.seed,
        )
        # the first prompt with this system message stays cached: its prefix is evaluated once
        system = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
        if not stream:
            with self.lock:
                self._pin(system)
                try:
                    out = self._llm.create_chat_completion(**kwargs)
                except ValueError as exc:  # e.g. prompt longer than the context window
                    raise GenerationError(f"llama.cpp ({self.id}): {exc}") from exc
                self._record_usage()
            return str(out["choices"][0]["message"]["content"] or "")
        return self._stream(kwargs, system)

    def _pin(self, system: str | None) -> None:
        """Tell the model which prefix to restore: the tokens every prompt with `system` shares
        (found once per system message; the caller holds the lock)."""
        from rag.llm.kv_cache import shared_prefix

        if system is not None and system not in self._prefixes:
            self._prefixes[system] = shared_prefix(self._llm, system)
        self._llm.pin_key = system
        self._llm.pin_tokens = self._prefixes.get(system, 0) if system is not None else 0

    def _stream(self, kwargs: dict[str, Any], system: str | None) -> Iterator[str]:
        with self.lock:  # held for the whole stream: one generation at a time per model
            self._pin(system)
            try:
                for i, part in enumerate(self._llm.create_chat_completion(stream=True, **kwargs)):
                    if i == 0:
                        self._record_usage()  # the prompt is evaluated before the first piece
                    delta = part["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
                self._record_usage()
            except ValueError as exc:
                raise GenerationError(f"llama.cpp ({self.id}): {exc}") from exc
