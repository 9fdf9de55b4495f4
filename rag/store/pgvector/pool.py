"""Connection pools: one per PostgreSQL URL per process, shared by every KB opened on it."""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING

from rag.errors import ConfigError
from rag.store.common import ConnectionCache

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

POOL_MAX = 8
CONNECT_TIMEOUT_S = 15

_pools: ConnectionCache[ConnectionPool] = ConnectionCache(is_live=lambda pool: not pool.closed)


def pool(url: str) -> ConnectionPool:
    """The process's pool for `url`, opened on first use (ConfigError naming the redacted URL if it cannot)."""
    try:
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("the pgvector store needs psycopg: pip install 'psycopg[binary,pool]'") from exc

    def open_pool() -> ConnectionPool:
        new = ConnectionPool(url, min_size=1, max_size=POOL_MAX, open=False, kwargs={"autocommit": False})
        try:
            new.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # psycopg_pool raises PoolTimeout; re-raised typed with the URL
            new.close()
            raise ConfigError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
        return new

    return _pools.get(url, open_pool)


def close_pools() -> None:
    """Close every pool (tests, process exit)."""
    for p in _pools.drain():
        p.close()


atexit.register(close_pools)


def redact(url: str) -> str:
    """The URL without its password (for messages and stats)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
