"""Generation through any OpenAI-compatible server (vLLM, llama.cpp server, FastChat, ...).

Spec: `openai:<base-url>[#model]`, e.g. `openai:http://gpu-box:8000/v1#Qwen2.5-7B-Instruct`.
The base URL is the API root that serves `/chat/completions` (a URL with no path gets `/v1`).
Without `#model` the first model listed by `GET /models` is used. The key comes from
settings.llm.api_key (CITEQA_LLM_API_KEY) and is sent as a Bearer token.

`count_tokens` is an approximation — the remote tokenizer is not available offline — chosen to
over-count slightly so prompts stay inside the budget: one token per Han character and one per
three other characters (BPE vocabularies average ~4 characters per English token and 1-1.5 Han
characters per token).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from rag.errors import ConfigError, GenerationError, ModelNotAvailable
from rag.llm.sampling import sampling
from rag.protocols import Message
from rag.settings import LLMSettings

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def approx_tokens(text: str) -> int:
    """Upper-leaning token estimate without the model's tokenizer (see the module docstring)."""
    han = len(_HAN.findall(text))
    other = len(text) - han
    return han + (other + 2) // 3


def parse_spec(argument: str) -> tuple[str, str | None]:
    """'http://host:8000/v1#model' -> ('http://host:8000/v1', 'model')."""
    url, _, model = argument.partition("#")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"OpenAI-compatible LLM {argument!r}: expected 'openai:http(s)://host[:port][/v1][#model]'")
    if parts.path in {"", "/"}:
        url += "/v1"
    return url, (model.strip() or None)


class OpenAIGenerator:
    """Chat completions over HTTP with streaming (server-sent events)."""

    def __init__(self, base_url: str, settings: LLMSettings, model: str | None = None) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            raise ModelNotAvailable("httpx is not installed: pip install httpx") from exc
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=settings.timeout_s)
        self._httpx = httpx
        self._settings = settings
        self.context_tokens: int = settings.context_tokens
        self.model = model or self._first_model()
        self.id = f"openai:{self.base_url}#{self.model}"
        self.lock = threading.Lock()  # only for callers that serialise on it; the server handles concurrency

    def _first_model(self) -> str:
        try:
            response = self._client.get("/models")
            response.raise_for_status()
            data = response.json().get("data") or []
        except (self._httpx.HTTPError, ValueError) as exc:
            raise GenerationError(f"OpenAI-compatible server {self.base_url}: cannot list models ({exc})") from exc
        if not data:
            raise GenerationError(f"OpenAI-compatible server {self.base_url} lists no models; name one with '#model'")
        return str(data[0]["id"])

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def _payload(
        self, messages: list[Message], stream: bool, max_tokens: int, temperature: float, stop: list[str] | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
            "seed": self._settings.seed,
        }
        if stop:
            payload["stop"] = stop[:4]  # the OpenAI API accepts at most four stop sequences
        return payload

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
        payload = self._payload(messages, stream, max_tokens, temperature, stop)
        if stream:
            return self._stream(payload)
        try:
            response = self._client.post("/chat/completions", json=payload)
            response.raise_for_status()
            body = response.json()
        except self._httpx.HTTPStatusError as exc:
            raise GenerationError(f"{self.id}: HTTP {exc.response.status_code}: {exc.response.text[:200]}") from exc
        except (self._httpx.HTTPError, ValueError) as exc:
            raise GenerationError(f"{self.id}: {exc}") from exc
        try:
            return str(body["choices"][0]["message"].get("content") or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise GenerationError(f"{self.id}: unexpected response {str(body)[:200]}") from exc

    def _stream(self, payload: dict[str, Any]) -> Iterator[str]:
        try:
            with self._client.stream("POST", "/chat/completions", json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    raise GenerationError(f"{self.id}: HTTP {response.status_code}: {response.text[:200]}")
                for line in response.iter_lines():
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue  # comments (": ping"), event names, blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise GenerationError(f"{self.id}: bad stream event {data[:120]!r}") from exc
                    if "error" in event:
                        raise GenerationError(f"{self.id}: {event['error']}")
                    for choice in event.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            yield delta
        except self._httpx.HTTPError as exc:
            raise GenerationError(f"{self.id}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
