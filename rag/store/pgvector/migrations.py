"""Versioned schema migrations: the global registry schema `citeqa` and one schema per knowledge base.

Migrations run under an advisory lock, so replicas starting together do not race. Never edit a
released entry: append a new version instead.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_INDEX = (
    "CREATE INDEX {exists}chunks_hnsw ON {s}.chunks USING hnsw (embedding vector_ip_ops) "
    f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
)

# (version, statements)
GLOBAL_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE EXTENSION IF NOT EXISTS vector",
            """CREATE TABLE IF NOT EXISTS citeqa.kbs (
                name text PRIMARY KEY,
                schema_name text NOT NULL UNIQUE,
                manifest jsonb NOT NULL,
                created_at double precision NOT NULL
            )""",
        ],
    ),
]

KB_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE {s}.documents (
                id text PRIMARY KEY,
                source text NOT NULL,
                title text NOT NULL,
                sha256 text NOT NULL,
                pages integer NOT NULL,
                chunks integer NOT NULL,
                added_at double precision NOT NULL,
                metadata jsonb NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE UNIQUE INDEX ON {s}.documents (sha256)",
            """CREATE TABLE {s}.doc_paths (
                path text PRIMARY KEY,
                doc_id text NOT NULL REFERENCES {s}.documents(id) ON DELETE CASCADE
            )""",
            "CREATE INDEX ON {s}.doc_paths (doc_id)",
            """CREATE TABLE {s}.pages (
                doc_id text NOT NULL REFERENCES {s}.documents(id) ON DELETE CASCADE,
                number integer NOT NULL,
                text text NOT NULL,
                PRIMARY KEY (doc_id, number)
            )""",
            """CREATE TABLE {s}.chunks (
                id text PRIMARY KEY,
                doc_id text NOT NULL REFERENCES {s}.documents(id) ON DELETE CASCADE,
                ordinal integer NOT NULL,
                text text NOT NULL,
                page_start integer NOT NULL,
                page_end integer NOT NULL,
                char_start integer NOT NULL,
                char_end integer NOT NULL,
                section text NOT NULL DEFAULT '',
                token_count integer NOT NULL DEFAULT 0,
                text_sha text NOT NULL,
                tsv tsvector NOT NULL,
                embedding vector({dim}) NOT NULL
            )""",
            "CREATE INDEX ON {s}.chunks (doc_id, ordinal)",
            "CREATE INDEX ON {s}.chunks (text_sha)",
            "CREATE INDEX chunks_tsv ON {s}.chunks USING gin (tsv)",
            HNSW_INDEX.replace("{exists}", ""),
        ],
    ),
    (
        # Deferred embedding: a chunk may be stored before its vector (embedding NULL, its embedding input
        # in embed_text until then). The partial index finds the queue and stays empty once all is embedded.
        2,
        [
            "ALTER TABLE {s}.chunks ALTER COLUMN embedding DROP NOT NULL",
            "ALTER TABLE {s}.chunks ADD COLUMN embed_text text",
            "CREATE INDEX chunks_pending ON {s}.chunks (text_sha) WHERE embedding IS NULL",
        ],
    ),
]


def schema_for(name: str) -> str:
    """The per-KB schema: a hash keeps any Unicode KB name inside PostgreSQL's 63-byte identifiers."""
    return "kb_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


def apply_migrations(conn: Connection, table: str, migrations: list[tuple[int, list[str]]], **fmt: Any) -> int:
    """Apply the missing versions in order; returns the resulting version. Caller holds the lock."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
    )
    done = {row[0] for row in conn.execute(f"SELECT version FROM {table}")}
    version = max(done, default=0)
    for v, statements in migrations:
        if v in done:
            continue
        for statement in statements:
            conn.execute(statement.format(**fmt))
        conn.execute(f"INSERT INTO {table} (version, applied_at) VALUES (%s, %s)", (v, time.time()))
        version = v
    return version


def ensure_global(conn: Connection) -> None:
    """The registry schema, created or migrated under a cluster-wide advisory lock."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('citeqa.migrations'))")
    conn.execute("CREATE SCHEMA IF NOT EXISTS citeqa")
    apply_migrations(conn, "citeqa.migrations", GLOBAL_MIGRATIONS)
