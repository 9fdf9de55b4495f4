"""In-process GGUF generation with llama-cpp-python (the offline default)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import GenerationError, ModelNotAvailable
from rag.protocols import Message
from rag.settings import LLMSettings


class LlamaCppGenerator:
    """One llama.cpp model. Calls are serialised by a lock: a llama context is not thread-safe."""

    def __init__(self, path: Path, settings: LLMSettings, name: str = "") -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelNotAvailable(
                'llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python'
            ) from exc
        threads = settings.threads or max(1, os.cpu_count() or 1)
        self._llm = Llama(
            model_path=str(path),
            n_ctx=settings.context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            seed=settings.seed,
            verbose=False,
        )
        self.id: str = name or path.name
        self.path = path
        self.context_tokens: int = settings.context_tokens
        self._settings = settings
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_tokens: int = 384,
        temperature: float = 0.1,
        stop: list[str] | None = None,
    ) -> str | Iterator[str]:
        kwargs: dict[str, Any] = dict(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop or None,
            seed=self._settings.seed,
        )
        if not stream:
            with self.lock:
                try:
                    out = self._llm.create_chat_completion(**kwargs)
                except ValueError as exc:  # e.g. prompt longer than the context window
                    raise GenerationError(f"llama.cpp ({self.id}): {exc}") from exc
            return str(out["choices"][0]["message"]["content"] or "")
        return self._stream(kwargs)

    def _stream(self, kwargs: dict[str, Any]) -> Iterator[str]:
        with self.lock:  # held for the whole stream: one generation at a time per model
            try:
                for part in self._llm.create_chat_completion(stream=True, **kwargs):
                    delta = part["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
            except ValueError as exc:
                raise GenerationError(f"llama.cpp ({self.id}): {exc}") from exc
