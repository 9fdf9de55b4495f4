"""SQLite schema of the embedded knowledge base (the source of truth)."""

from __future__ import annotations

import sqlite3

from rag.store.keyword_fts import FTS_SCHEMA

SQL_SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    pages INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS document_paths (
    path TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS document_paths_doc ON document_paths(doc_id);
CREATE TABLE IF NOT EXISTS pages (
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    text TEXT NOT NULL,
    ocr INTEGER NOT NULL DEFAULT 0,
    header TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (doc_id, number)
) WITHOUT ROWID;
-- AUTOINCREMENT: rowids are never reused, so they can be FAISS ids and stale indexes can be diffed.
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    section TEXT NOT NULL DEFAULT '',
    token_count INTEGER NOT NULL DEFAULT 0,
    tokens TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ordinal);
CREATE INDEX IF NOT EXISTS chunks_sha ON chunks(text_sha256);
-- One vector per distinct chunk text: re-chunking reuses vectors of unchanged text.
CREATE TABLE IF NOT EXISTS vectors (
    text_sha256 TEXT PRIMARY KEY,
    vector BLOB NOT NULL
) WITHOUT ROWID;
-- The embedding queue (deferred embedding): each chunk text with no row in `vectors` yet, with its embedding
-- input (header + text: headers are stored nowhere else). A rowid table, so rowid order is queue order.
-- Every chunk's text_sha256 is in exactly one of `vectors` and `pending_embeddings` (same transactions).
CREATE TABLE IF NOT EXISTS pending_embeddings (
    text_sha256 TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
"""


def connect(path: str) -> sqlite3.Connection:
    """Open the database with WAL, foreign keys and explicit transactions."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: a process kill never corrupts or half-applies
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(SCHEMA + FTS_SCHEMA):
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0')")
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SQL_SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into statements (triggers contain ';' inside BEGIN ... END)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out
