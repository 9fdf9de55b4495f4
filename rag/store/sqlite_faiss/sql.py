"""SQL of the embedded store: transactions, batched IN lists, the chunk select list and search filters."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from rag.records import Chunk, ParsedDocument
from rag.store.common import CHUNK_FIELDS, any_of, chunk_from_row

DB_NAME = "kb.sqlite"
BATCH = 500  # SQLite host parameters per IN (...) list

# rowid first (the FAISS id), then the shared CHUNK_FIELDS order; `source` comes from the documents table.
CHUNK_SELECT = (
    "SELECT c.rowid, "
    + ", ".join("d.source" if f == "source" else f"c.{f}" for f in CHUNK_FIELDS)
    + " FROM chunks c JOIN documents d ON d.id = c.doc_id"
)
DOC_COLS = "id, sha256, source, title, pages, added_at"


def row_to_chunk(row: Sequence[Any]) -> Chunk:
    """A chunk from a CHUNK_SELECT row (its leading rowid skipped)."""
    return chunk_from_row(row[1:])


def batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def marks(part: Sequence[Any]) -> str:
    return ",".join("?" * len(part))


def generation(conn: sqlite3.Connection) -> int:
    """The version of the chunk set, bumped by every write that changes it."""
    return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])


def set_generation(conn: sqlite3.Connection, gen: int) -> None:
    conn.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))


class Txn:
    """`with Txn(conn) as conn:` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def drop_orphan_keys(conn: sqlite3.Connection, shas: Iterable[str]) -> None:
    """Delete cached vectors and queued embeddings that no chunk uses any more."""
    for table in ("vectors", "pending_embeddings"):
        for part in batches(sorted(shas)):
            conn.execute(
                f"DELETE FROM {table} WHERE text_sha256 IN ({marks(part)}) AND NOT EXISTS "
                f"(SELECT 1 FROM chunks WHERE chunks.text_sha256 = {table}.text_sha256)",
                list(part),
            )


# Chunks that have a vector. Every chunk's key is in `vectors` or in `pending_embeddings` (see schema.py), so
# this reads only the small chunks_sha index and the queue, never the vectors table (1.5 KB a row at 384-d).
EMBEDDED_ROWIDS = "SELECT rowid FROM chunks WHERE text_sha256 NOT IN (SELECT text_sha256 FROM pending_embeddings)"
QUEUED_CHUNKS = "SELECT COUNT(*) FROM chunks WHERE text_sha256 IN (SELECT text_sha256 FROM pending_embeddings)"


def queued_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> list[str]:
    """Those of `keys` that are in the embedding queue."""
    found: list[str] = []
    for part in batches(sorted(set(keys))):
        found += [
            r[0]
            for r in conn.execute(
                f"SELECT text_sha256 FROM pending_embeddings WHERE text_sha256 IN ({marks(part)})", list(part)
            )
        ]
    return found


def dequeue(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    for part in batches(sorted(set(keys))):
        conn.execute(f"DELETE FROM pending_embeddings WHERE text_sha256 IN ({marks(part)})", list(part))


def rowids_of_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> list[int]:
    """Rowids of every chunk whose embedding key is one of `keys` (chunks share a key: one vector per text)."""
    rowids: list[int] = []
    for part in batches(sorted(set(keys))):
        rowids += [
            int(r[0])
            for r in conn.execute(f"SELECT rowid FROM chunks WHERE text_sha256 IN ({marks(part)})", list(part))
        ]
    return rowids


def chunk_vectors(conn: sqlite3.Connection, rowids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(rowids, vectors) of those of `rowids` whose chunk has a vector, in rowid order (what FAISS holds)."""
    empty = np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    if len(rowids) == 0:
        return empty
    ids: list[int] = []
    blobs: list[bytes] = []
    query = "SELECT c.rowid, v.vector FROM chunks c JOIN vectors v ON v.text_sha256 = c.text_sha256"
    if len(rowids) > 20 * BATCH:  # one ordered pass beats thousands of IN lists
        wanted = set(int(r) for r in rowids)
        for rid, blob in conn.execute(query + " ORDER BY c.rowid"):
            if rid in wanted:
                ids.append(rid)
                blobs.append(blob)
    else:
        for part in batches(sorted(int(r) for r in rowids)):
            for rid, blob in conn.execute(query + f" WHERE c.rowid IN ({marks(part)}) ORDER BY c.rowid", part):
                ids.append(rid)
                blobs.append(blob)
    if not ids:
        return empty
    vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    return np.asarray(ids, dtype=np.int64), vecs


def filter_sql(doc_ids: Sequence[str], metadata: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL selecting the rowids of chunks in `doc_ids` (if any) whose document metadata match `metadata`."""
    where: list[str] = []
    params: list[Any] = []
    if doc_ids:
        # One JSON parameter, not one '?' per id: any number of ids stays under SQLite's variable limit.
        where.append("c.doc_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([str(d) for d in doc_ids]))
    for key, value in (metadata or {}).items():
        path = '$."' + str(key).replace('"', "") + '"'
        values = [int(v) if isinstance(v, bool) else v for v in any_of(value)]  # json_extract gives 1/0
        where.append(f"json_extract(d.metadata, ?) IN ({marks(values)})")
        params += [path, *values]
    sql = "SELECT c.rowid FROM chunks c JOIN documents d ON d.id = c.doc_id"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql, params


def kept_paths(conn: sqlite3.Connection, doc_id: str) -> list[str]:
    """The paths of a stored document that a rewrite of the same content must keep (see Store.add_document)."""
    return [r[0] for r in conn.execute("SELECT path FROM document_paths WHERE doc_id=? ORDER BY path", (doc_id,))]


def insert_document(
    conn: sqlite3.Connection,
    doc_id: str,
    doc: ParsedDocument,
    chunks: Sequence[Chunk],
    vectors: np.ndarray | None,
    hashes: Sequence[str],
    tokens: Sequence[str],
    paths: Sequence[str] = (),
    *,
    inputs: Sequence[str] = (),
) -> list[int]:
    """Insert a document row, its paths (doc.source + `paths`), pages, vectors and chunks (inside the
    caller's transaction).

    Returns the new chunks' rowids (their FAISS ids). Vectors are stored once per distinct chunk text.
    `vectors=None` queues every key without a stored vector, with its embedding input from `inputs`;
    with vectors, keys that were queued (by another document) are dequeued: they have a vector now.
    """
    metadata = json.dumps(doc.metadata or {}, ensure_ascii=False, default=str)
    conn.execute(
        "INSERT INTO documents(id, sha256, source, title, pages, metadata, added_at) VALUES (?,?,?,?,?,?,?)",
        (doc_id, doc.sha256, doc.source, doc.title or "", doc.page_count, metadata, time.time()),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO document_paths(path, doc_id) VALUES (?, ?)",
        [(path, doc_id) for path in dict.fromkeys([doc.source, *paths])],
    )
    conn.executemany(
        "INSERT INTO pages(doc_id, number, text, ocr, header) VALUES (?,?,?,?,?)",
        [(doc_id, p.number, p.text, int(p.ocr), p.header or "") for p in doc.pages],
    )
    if vectors is None:
        conn.executemany(
            "INSERT OR IGNORE INTO pending_embeddings(text_sha256, text) SELECT ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM vectors WHERE text_sha256 = ?)",
            [(h, inputs[i], h) for i, h in enumerate(hashes)],
        )
    else:
        conn.executemany(
            "INSERT OR IGNORE INTO vectors(text_sha256, vector) VALUES (?, ?)",
            [(h, vectors[i].tobytes()) for i, h in enumerate(hashes)],
        )
        dequeue(conn, hashes)
    rowids: list[int] = []
    for i, c in enumerate(chunks):
        cur = conn.execute(
            "INSERT INTO chunks(id, doc_id, ordinal, text, text_sha256, page_start, page_end, char_start, "
            "char_end, section, token_count, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                c.id,
                doc_id,
                c.ordinal if c.ordinal else i,
                c.text,
                hashes[i],
                c.page_start,
                c.page_end,
                c.char_start,
                c.char_end,
                c.section or "",
                c.token_count,
                tokens[i],
            ),
        )
        rowids.append(int(cur.lastrowid or 0))
    return rowids
