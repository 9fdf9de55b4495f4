"""Milvus clients (one per URI per process), filter-expression literals and VARCHAR-safe text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import ConfigError
from rag.store.common import ConnectionCache

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from rag.settings import Settings

_clients: ConnectionCache[MilvusClient] = ConnectionCache()


def default_uri(settings: Settings) -> str:
    return str(Path(settings.paths.home) / "milvus.db")


def is_lite(uri: str) -> bool:
    """A local `.db` path: Milvus Lite, served in-process."""
    return uri.endswith(".db") and "://" not in uri


def client(uri: str) -> MilvusClient:
    """One client per URI per process (Milvus Lite serves a data dir to one process at a time)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the milvus store needs pymilvus: pip install pymilvus (and milvus-lite for local files)"
        ) from exc

    def connect() -> MilvusClient:
        if is_lite(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            return MilvusClient(uri=uri)
        except Exception as exc:  # pymilvus raises MilvusException / ConnectionError; re-raised typed
            raise ConfigError(f"cannot connect to Milvus at {uri}: {exc}") from exc

    return _clients.get(uri, connect)


def release(uri: str) -> None:
    """Close the client for `uri` and, for Milvus Lite, stop its in-process server (frees the data dir)."""
    c = _clients.pop(uri)
    if c is not None:
        c.close()
    if is_lite(uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(uri)


def lit(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def in_expr(field: str, values: Sequence[str]) -> str:
    return f"{field} in [{', '.join(lit(v) for v in values)}]"


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes of `text`, cut at a character boundary (Milvus VARCHAR limits are bytes)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def split_utf8(text: str, limit: int) -> list[str]:
    """`text` in parts of at most `limit` UTF-8 bytes each."""
    parts: list[str] = []
    while True:
        head = truncate_utf8(text, limit)
        parts.append(head)
        text = text[len(head) :]
        if not text:
            return parts
