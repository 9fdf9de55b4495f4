"""PostgreSQL + pgvector knowledge bases: the scale-out store for many service replicas.

Layout: one schema `citeqa` with the registry (`citeqa.kbs`: name -> schema + manifest JSON) and
`citeqa.migrations`; one schema per knowledge base (`kb_<hash of name>`, so any Unicode KB name
works) holding documents, doc_paths, pages and chunks, and its own `migrations` table. Vectors live
in a `vector(dim)` column with an HNSW index (inner product on normalised vectors = cosine).

A chunk may be stored before its vector (deferred embedding: embedding NULL until add_embeddings).

migrations.py: the schema; pool.py: connection pools; search.py: dense/keyword/hybrid search;
queue.py: the embedding queue; store.py: one KB. This module: the backend that creates, lists and drops KBs.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from rag.errors import ConfigError
from rag.store.common import kb_not_found
from rag.store.manifest import Manifest, check_embedder
from rag.store.pgvector.migrations import KB_MIGRATIONS, apply_migrations, ensure_global, schema_for
from rag.store.pgvector.pool import close_pools, pool, redact
from rag.store.pgvector.search import tsvector_literal
from rag.store.pgvector.store import BACKEND, INDEX_PARAMS, PgvectorStore

if TYPE_CHECKING:
    from rag.settings import Settings

__all__ = ["PgvectorBackend", "PgvectorStore", "close_pools", "schema_for", "tsvector_literal"]


class PgvectorBackend:
    """Creates, lists and drops knowledge bases in one PostgreSQL database (settings.store.url)."""

    name = BACKEND

    def _url(self, settings: Settings) -> str:
        url = settings.store.url
        if not url:
            raise ConfigError(
                "the pgvector store needs a database URL: set CITEQA_STORE_URL=postgresql://user:pass@host:5432/db"
            )
        return url

    def open(
        self, settings: Settings, name: str, *, embedder_id: str | None, dim: int | None, create: bool
    ) -> PgvectorStore:
        url = self._url(settings)
        shared = pool(url)
        with shared.connection() as conn, conn.transaction():
            ensure_global(conn)
            row = conn.execute("SELECT schema_name, manifest FROM citeqa.kbs WHERE name = %s", (name,)).fetchone()
            if row is None:
                if not create:
                    known = sorted(r[0] for r in conn.execute("SELECT name FROM citeqa.kbs"))
                    raise kb_not_found(name, f"PostgreSQL at {redact(url)}", known)
                manifest = Manifest.for_new_kb(
                    name, BACKEND, embedder_id, dim, settings.chunking.model_dump(), dict(INDEX_PARAMS)
                )
                schema = schema_for(name)
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                conn.execute(
                    "INSERT INTO citeqa.kbs (name, schema_name, manifest, created_at) VALUES (%s, %s, %s, %s)",
                    (name, schema, json.dumps(manifest.to_json()), time.time()),
                )
            else:
                schema, data = row
                manifest = Manifest.from_json(dict(data), where=f"citeqa.kbs[{name!r}]")
                check_embedder(manifest, embedder_id, dim, name)
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
            apply_migrations(conn, f"{schema}.migrations", KB_MIGRATIONS, s=schema, dim=manifest.dim)
        return PgvectorStore(shared, name, schema, manifest, url)

    def list_names(self, settings: Settings) -> list[str]:
        with pool(self._url(settings)).connection() as conn, conn.transaction():
            ensure_global(conn)
            return sorted(r[0] for r in conn.execute("SELECT name FROM citeqa.kbs"))

    def exists(self, settings: Settings, name: str) -> bool:
        with pool(self._url(settings)).connection() as conn, conn.transaction():
            ensure_global(conn)
            return conn.execute("SELECT 1 FROM citeqa.kbs WHERE name = %s", (name,)).fetchone() is not None

    def drop(self, settings: Settings, name: str) -> None:
        with pool(self._url(settings)).connection() as conn, conn.transaction():
            ensure_global(conn)
            row = conn.execute("DELETE FROM citeqa.kbs WHERE name = %s RETURNING schema_name", (name,)).fetchone()
            if row is not None:
                conn.execute(f"DROP SCHEMA IF EXISTS {row[0]} CASCADE")
