"""Real scale-out engines for tests: a PostgreSQL + pgvector server (pgserver wheel) and Milvus Lite.

Imported by tests/test_store_contract.py and tests/test_scale*.py (not a conftest: LEAD owns that).

As root, pgserver runs PostgreSQL as a `pgserver` system user it creates, and opens the data
directory's parent folders for traversal (chmod g+rx,o+rx). Under pytest's temporary tree that
breaks: every pytest session re-tightens /tmp/pytest-of-root to 0700 (another session starting in
parallel cuts the running server off its data). So as root the data directory is a fresh
`mkdtemp()` directly under the system temp dir (whose only parent, /tmp, is already traversable),
deleted when the session ends; as another user it lives in pytest's temporary tree.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def have_pgserver() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pgserver", "psycopg", "psycopg_pool"))


def have_milvus() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))


@contextmanager
def postgres_server(tmp_root: Path) -> Iterator[str]:
    """Start a throwaway server; yields its postgresql:// URL (Unix socket); stops and deletes it after."""
    if not have_pgserver():
        pytest.skip("pgserver / psycopg not installed (pip install pgserver 'psycopg[binary,pool]')")
    sys.path.insert(0, str(REPO / "scripts"))
    from start_pgserver import start, stop

    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="citeqa-pg-")) if as_root else tmp_root
    root.mkdir(parents=True, exist_ok=True)
    data = root / "pgdata"
    url = start(data, cleanup=None)
    try:
        yield url
    finally:
        from rag.store.pgvector import close_pools

        close_pools()
        try:
            stop(data)
        finally:
            shutil.rmtree(root if as_root else data, ignore_errors=True)


def backend_params(*names: str) -> list:  # type: ignore[type-arg]
    """pytest params for store backends: faiss always; pgvector and milvus marked `scale` and skipped,
    with the pip line, where their server package is missing (the contract tests' and queue tests' list)."""
    import pytest

    servers = {
        "pgvector": (have_pgserver, "pip install pgserver 'psycopg[binary,pool]'"),
        "milvus": (have_milvus, "pip install pymilvus milvus-lite"),
    }
    out = []
    for name in names:
        if name not in servers:
            out.append(pytest.param(name, id=name))
            continue
        have, hint = servers[name]
        out.append(pytest.param(name, id=name, marks=[pytest.mark.scale, pytest.mark.skipif(not have(), reason=hint)]))
    return out
