"""PostgreSQL + pgvector knowledge bases: the scale-out store for many service replicas.

Layout: one schema `citeqa` with the registry (`citeqa.kbs`: name -> schema + manifest JSON) and
`citeqa.migrations`; one schema per knowledge base (`kb_<hash of name>`, so any Unicode KB name
works) holding documents, doc_paths, pages and chunks, and its own `migrations` table. Migrations
are versioned and applied under an advisory lock, so replicas starting together do not race.

Vectors live in a `vector(dim)` column with an HNSW index (inner product on normalised vectors =
cosine). Keyword search is PostgreSQL full-text search over the tokens of rag.store.analyzer
(jieba for Chinese): the tsvector is built from the analyzer's tokens directly (a tsvector literal,
no re-parsing by a text search config), ranked BM25-like (idf-weighted ts_rank). Every ingestion
write is one transaction, so a crash leaves the old state or the new.

pgvector 0.6's HNSW scan stops after `hnsw.ef_search` candidates and applies a WHERE filter
afterwards, so filtered searches can return too few rows. Filtered searches therefore use an
exact scan when the filter is narrow and an over-fetching HNSW scan (checked, then exact as a last
resort) when it is wide — results are always complete.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import (
    ConfigError,
    DocumentNotFound,
    InvalidRequest,
    KnowledgeBaseError,
    KnowledgeBaseNotFound,
)
from rag.protocols import SearchFilter
from rag.records import Chunk, DocumentInfo, Hit, ParsedDocument, display_name
from rag.store.analyzer import tokenize
from rag.store.manifest import Manifest, check_embedder

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

    from rag.settings import Settings

BACKEND = "pgvector"
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
EF_SEARCH_MIN = 64
EF_SEARCH_MAX = 1000  # pgvector 0.6's upper bound for hnsw.ef_search
EXACT_FILTER_ROWS = 50_000  # filtered searches over at most this many chunks scan exactly
MAX_QUERY_TERMS = 32
KEYWORD_CANDIDATES = 50_000  # rows ranked at most per keyword query
MAX_POSITIONS = 255  # a tsvector keeps at most 256 positions per lexeme
_CHUNK_COLUMNS = "c.id, c.doc_id, c.text, c.page_start, c.page_end, c.char_start, c.char_end, c.section, c.token_count, c.ordinal, d.source"

# --------------------------------------------------------------------------- migrations
# (version, statements). Never edit a released entry: append a new version instead.
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
            (
                f"CREATE INDEX chunks_hnsw ON {{s}}.chunks USING hnsw (embedding vector_ip_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
            ),
        ],
    ),
]

_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool:
    """One pool per URL per process, shared by every KB opened on it."""
    try:
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("the pgvector store needs psycopg: pip install 'psycopg[binary,pool]'") from exc
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None or pool.closed:
            pool = ConnectionPool(url, min_size=1, max_size=8, open=False, kwargs={"autocommit": False})
            try:
                pool.open(wait=True, timeout=15)
            except Exception as exc:  # psycopg_pool raises PoolTimeout; re-raised typed with the URL
                pool.close()
                raise ConfigError(f"cannot connect to PostgreSQL at {_redact(url)}: {exc}") from exc
            _pools[url] = pool
        return pool


def close_pools() -> None:
    """Close every pool (tests, process exit)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


atexit.register(close_pools)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def schema_for(name: str) -> str:
    """The per-KB schema: a hash keeps any Unicode KB name inside PostgreSQL's 63-byte identifiers."""
    return "kb_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


def _apply_migrations(conn: Connection, table: str, migrations: list[tuple[int, list[str]]], **fmt: Any) -> int:
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


def _ensure_global(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('citeqa.migrations'))")
    conn.execute("CREATE SCHEMA IF NOT EXISTS citeqa")
    _apply_migrations(conn, "citeqa.migrations", GLOBAL_MIGRATIONS)


_VEC_FORMATS: dict[int, str] = {}


def _vec_text(v: np.ndarray) -> str:
    """pgvector's text form; %.9g round-trips float32 exactly (and is 4x faster than repr)."""
    values = np.asarray(v, dtype=np.float32).ravel().tolist()
    fmt = _VEC_FORMATS.get(len(values))
    if fmt is None:
        fmt = _VEC_FORMATS.setdefault(len(values), "[" + ",".join(["%.9g"] * len(values)) + "]")
    return fmt % tuple(values)


def _quote_lexeme(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(text: str) -> str:
    """The analyzer's tokens as a tsvector literal with positions (no re-tokenising by PostgreSQL)."""
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(tokenize(text), start=1):
        plist = positions.setdefault(token, [])
        if len(plist) < MAX_POSITIONS:
            plist.append(min(i, 16383))
    return " ".join(f"{_quote_lexeme(t)}:{','.join(map(str, p))}" for t, p in positions.items())


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=row[0],
        doc_id=row[1],
        text=row[2],
        page_start=row[3],
        page_end=row[4],
        char_start=row[5],
        char_end=row[6],
        section=row[7],
        token_count=row[8],
        ordinal=row[9],
        doc=display_name(row[10]),
    )


class PgvectorStore:
    """One knowledge base in PostgreSQL (see the module docstring for the layout)."""

    def __init__(self, pool: ConnectionPool, name: str, schema: str, manifest: Manifest, url: str) -> None:
        self.name = name
        self.path: Path | None = None
        self.url = url
        self.schema = schema
        self.manifest = manifest
        self.embedder_id = manifest.embedder
        self.dim = manifest.dim
        self._pool = pool
        self._closed = False
        self._local = threading.local()

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction (committed on success, rolled back on error).

        Inside `snapshot()` the thread's pinned connection is reused, so every read sees one snapshot.
        """
        if self._closed:
            raise KnowledgeBaseError(f"knowledge base {self.name!r} is closed")
        pinned = getattr(self._local, "conn", None)
        if pinned is not None:
            with pinned.transaction():  # a savepoint inside the snapshot's transaction
                yield pinned
            return
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this block (this thread) see one consistent database snapshot.

        A hybrid search runs a dense and a keyword query; without a snapshot a writer committing in
        between can make the two see different versions of a document. Nested calls are no-ops.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _sql(self, statement: str) -> str:
        return statement.replace("{s}", self.schema)

    # ------------------------------------------------------------------ documents
    def _info(self, conn: Connection, where: str, params: Sequence[Any]) -> list[DocumentInfo]:
        rows = conn.execute(
            self._sql(
                "SELECT d.id, d.source, d.title, d.sha256, d.pages, d.chunks, d.added_at, "
                "coalesce(array_agg(p.path ORDER BY p.path) FILTER (WHERE p.path IS NOT NULL), '{}') "
                f"FROM {{s}}.documents d LEFT JOIN {{s}}.doc_paths p ON p.doc_id = d.id WHERE {where} "
                "GROUP BY d.id ORDER BY d.source, d.id"
            ),
            params,
        ).fetchall()
        return [DocumentInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7])) for r in rows]

    def find_by_sha(self, sha256: str) -> DocumentInfo | None:
        with self._tx() as conn:
            found = self._info(conn, "d.sha256 = %s", (sha256,))
        return found[0] if found else None

    def find_by_path(self, path: str) -> DocumentInfo | None:
        with self._tx() as conn:
            found = self._info(conn, "d.id = (SELECT doc_id FROM {s}.doc_paths WHERE path = %s)", (path,))
        return found[0] if found else None

    def add_document(
        self,
        doc: ParsedDocument,
        chunks: list[Chunk],
        vectors: np.ndarray,
        *,
        replaces: str | None = None,
    ) -> DocumentInfo:
        """Store a document, its pages, chunks and vectors in one transaction (see Store)."""
        doc_id = _doc_id_of(doc, chunks)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(chunks), -1) if len(chunks) else vectors
        if len(chunks) and vectors.shape[1] != self.dim:
            raise KnowledgeBaseError(
                f"knowledge base {self.name!r} holds {self.dim}-d vectors; got {vectors.shape[1]}-d for {doc.source}"
            )
        if any(c.doc_id != doc_id for c in chunks):
            raise InvalidRequest(f"{doc.source}: chunks belong to more than one document id")
        tsvs = [tsvector_literal(c.text.replace("\x00", "")) for c in chunks]  # jieba before the transaction
        now = time.time()
        with self._tx() as conn:
            # Serialise writers of the same content (replicas ingesting the same file at once).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema + doc.sha256,))
            same = conn.execute(self._sql("SELECT id FROM {s}.documents WHERE sha256 = %s"), (doc.sha256,)).fetchone()
            if same is not None and same[0] not in (doc_id, replaces):
                # Same content already stored under another id: only record the new path (dedup).
                self._upsert_path(conn, doc.source, same[0])
                return self._info(conn, "d.id = %s", (same[0],))[0]
            conn.execute(
                self._sql("DELETE FROM {s}.documents WHERE id = ANY(%s)"), ([x for x in {doc_id, replaces} if x],)
            )
            conn.execute(
                self._sql(
                    "INSERT INTO {s}.documents (id, source, title, sha256, pages, chunks, added_at, metadata) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ),
                (
                    doc_id,
                    doc.source,
                    doc.title,
                    doc.sha256,
                    len(doc.pages),
                    len(chunks),
                    now,
                    json.dumps(doc.metadata or {}, default=str),
                ),
            )
            self._upsert_path(conn, doc.source, doc_id)
            with conn.cursor() as cur:
                with cur.copy(self._sql("COPY {s}.pages (doc_id, number, text) FROM STDIN")) as cp:
                    for page in doc.pages:
                        cp.write_row((doc_id, page.number, page.text.replace("\x00", "")))
                with cur.copy(
                    self._sql(
                        "COPY {s}.chunks (id, doc_id, ordinal, text, page_start, page_end, char_start, char_end, "
                        "section, token_count, text_sha, tsv, embedding) FROM STDIN"
                    )
                ) as cp:
                    for i, (chunk, vec) in enumerate(zip(chunks, vectors)):
                        text = chunk.text.replace("\x00", "")
                        cp.write_row(
                            (
                                chunk.id,
                                doc_id,
                                chunk.ordinal if chunk.ordinal else i,
                                text,
                                chunk.page_start,
                                chunk.page_end,
                                chunk.char_start,
                                chunk.char_end,
                                chunk.section,
                                chunk.token_count,
                                hashlib.sha256(chunk.text.encode("utf-8")).hexdigest(),
                                tsvs[i],
                                _vec_text(vec),
                            )
                        )
            found = self._info(conn, "d.id = %s", (doc_id,))
        return found[0]

    def _upsert_path(self, conn: Connection, path: str, doc_id: str) -> None:
        conn.execute(
            self._sql(
                "INSERT INTO {s}.doc_paths (path, doc_id) VALUES (%s, %s) "
                "ON CONFLICT (path) DO UPDATE SET doc_id = EXCLUDED.doc_id"
            ),
            (str(path), doc_id),
        )

    def add_path(self, doc_id: str, path: str) -> None:
        with self._tx() as conn:
            if conn.execute(self._sql("SELECT 1 FROM {s}.documents WHERE id = %s"), (doc_id,)).fetchone() is None:
                raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")
            self._upsert_path(conn, path, doc_id)

    def remove_path(self, path: str) -> None:
        """Forget one path; the document itself stays."""
        with self._tx() as conn:
            conn.execute(self._sql("DELETE FROM {s}.doc_paths WHERE path = %s"), (str(path),))

    def remove_document(self, doc_id: str) -> None:
        with self._tx() as conn:
            cur = conn.execute(self._sql("DELETE FROM {s}.documents WHERE id = %s"), (doc_id,))
            if cur.rowcount == 0:
                raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")

    def list_documents(self) -> list[DocumentInfo]:
        with self._tx() as conn:
            return self._info(conn, "true", ())

    def get_document(self, doc_id: str) -> DocumentInfo:
        with self._tx() as conn:
            found = self._info(conn, "d.id = %s", (doc_id,))
        if not found:
            raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")
        return found[0]

    def page_text(self, doc_id: str, page: int) -> str:
        with self._tx() as conn:
            row = conn.execute(
                self._sql("SELECT text FROM {s}.pages WHERE doc_id = %s AND number = %s"), (doc_id, page)
            ).fetchone()
        if row is None:
            raise DocumentNotFound(f"page {page} of document {doc_id!r} is not in knowledge base {self.name!r}")
        return str(row[0])

    # ------------------------------------------------------------------ embedding cache
    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if not text_hashes:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT DISTINCT ON (text_sha) text_sha, embedding::text FROM {s}.chunks WHERE text_sha = ANY(%s)"
                ),
                (list(text_hashes),),
            ).fetchall()
        return {sha: _parse_vec(v) for sha, v in rows}

    # ------------------------------------------------------------------ search
    def _filter_sql(self, flt: SearchFilter | None) -> tuple[str, list[Any]]:
        if not flt:
            return "", []
        clauses: list[str] = []
        params: list[Any] = []
        if flt.doc_ids:
            clauses.append("c.doc_id = ANY(%s)")
            params.append(list(flt.doc_ids))
        for key, value in (flt.metadata or {}).items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            clauses.append("c.doc_id IN (SELECT id FROM {s}.documents WHERE metadata -> %s = ANY(%s::jsonb[]))")
            params += [str(key), [json.dumps(v) for v in values]]
        return " AND ".join(clauses), params

    def _filtered_rows(self, conn: Connection, flt: SearchFilter) -> tuple[int, int]:
        where, params = self._filter_sql(flt)
        doc_where = where.replace("c.doc_id", "d.id")
        total, matching = conn.execute(
            self._sql(
                "SELECT (SELECT coalesce(sum(chunks), 0) FROM {s}.documents), "
                f"(SELECT coalesce(sum(chunks), 0) FROM {{s}}.documents d WHERE {doc_where})"
            ),
            params,
        ).fetchone()
        return int(matching), int(total)

    def dense_search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        if k <= 0:
            return []
        q = _vec_text(vector)
        with self._tx() as conn:
            if not flt:
                ef = min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, 2 * k))
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                rows = conn.execute(
                    self._sql(
                        f"SELECT {_CHUNK_COLUMNS}, -(c.embedding <#> %s::vector) AS score FROM {{s}}.chunks c "
                        "JOIN {s}.documents d ON d.id = c.doc_id ORDER BY c.embedding <#> %s::vector LIMIT %s"
                    ),
                    (q, q, k),
                ).fetchall()
                return _hits(rows, "dense")
            matching, total = self._filtered_rows(conn, flt)
            if matching == 0:
                return []
            where, params = self._filter_sql(flt)
            want = min(k, matching)
            fetch = math.ceil(2 * k * total / matching)
            if matching > EXACT_FILTER_ROWS and fetch <= EF_SEARCH_MAX:
                # Wide filter: the HNSW scan over-fetches so enough rows survive the filter.
                conn.execute(f"SET LOCAL hnsw.ef_search = {max(fetch, EF_SEARCH_MIN)}")
                rows = conn.execute(
                    self._sql(
                        f"SELECT * FROM (SELECT {_CHUNK_COLUMNS}, -(c.embedding <#> %s::vector) AS score "
                        "FROM {s}.chunks c JOIN {s}.documents d ON d.id = c.doc_id "
                        "ORDER BY c.embedding <#> %s::vector LIMIT %s) c "
                        f"WHERE {where} ORDER BY score DESC LIMIT %s"
                    ),
                    (q, q, max(fetch, EF_SEARCH_MIN), *params, k),
                ).fetchall()
                if len(rows) >= want:
                    return _hits(rows, "dense")
            # Narrow filter (or the over-fetch came up short): exact scan of the filtered chunks.
            # `+ 0` keeps the planner off the HNSW index, whose scan would drop filtered rows.
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS}, -(c.embedding <#> %s::vector) AS score FROM {{s}}.chunks c "
                    f"JOIN {{s}}.documents d ON d.id = c.doc_id WHERE {where} "
                    "ORDER BY (c.embedding <#> %s::vector) + 0 LIMIT %s"
                ),
                (q, *params, q, k),
            ).fetchall()
            return _hits(rows, "dense")

    def exact_search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Brute-force inner-product search (no index): the reference for ANN recall."""
        q = _vec_text(vector)
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS}, -(c.embedding <#> %s::vector) AS score FROM {{s}}.chunks c "
                    "JOIN {s}.documents d ON d.id = c.doc_id ORDER BY (c.embedding <#> %s::vector) + 0 LIMIT %s"
                ),
                (q, q, k),
            ).fetchall()
        return _hits(rows, "dense")

    def keyword_search(self, query: str, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        """BM25-like ranking: sum over query terms of idf(term) * ts_rank(tsv, term, length-normalised).

        PostgreSQL has no top-k pruning for full-text ranking, so the candidate set is kept small:
        rows must contain one of the query's selective terms (document frequency under `cap`);
        very common terms only add to the score. A query made only of common terms matches rows
        containing all of them, at most KEYWORD_CANDIDATES of them.
        """
        terms = list(dict.fromkeys(tokenize(query)))[:MAX_QUERY_TERMS]
        if not terms or k <= 0:
            return []
        where, params = self._filter_sql(flt)
        with self._tx() as conn:
            # Chunk count and document frequency per term (from the GIN index, counted up to `cap`).
            rows = conn.execute(
                self._sql(
                    "WITH n AS (SELECT coalesce(sum(chunks), 0)::bigint AS total FROM {s}.documents), "
                    "cap AS (SELECT greatest(1000, least(total / 20, 10000)) AS cap FROM n) "
                    "SELECT t, (SELECT count(*) FROM (SELECT 1 FROM {s}.chunks WHERE tsv @@ t::tsquery "
                    "LIMIT (SELECT cap FROM cap)) x), (SELECT total FROM n), (SELECT cap FROM cap) "
                    "FROM unnest(%s::text[]) AS t"
                ),
                ([_quote_lexeme(t) for t in terms],),
            ).fetchall()
            total, cap = int(rows[0][2]), int(rows[0][3])
            if not total:
                return []
            found = [(lex, int(df)) for lex, df, _, _ in rows if df > 0]
            if not found:
                return []
            weighted = [(lex, math.log(1 + (total - df + 0.5) / (df + 0.5))) for lex, df in found]
            rare = [lex for lex, df in found if df < cap]
            match = " | ".join(rare) if rare else " & ".join(lex for lex, _ in found)
            score_sql = " + ".join("%s * ts_rank(c.tsv, %s::tsquery, 1)" for _ in weighted)
            score_params: list[Any] = [x for lex, idf in weighted for x in (idf, lex)]
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS}, ({score_sql}) AS score FROM "
                    "(SELECT id, doc_id, text, page_start, page_end, char_start, char_end, section, token_count, "
                    "ordinal, tsv FROM {s}.chunks WHERE tsv @@ %s::tsquery LIMIT %s) c "
                    "JOIN {s}.documents d ON d.id = c.doc_id "
                    + (f"WHERE {where} " if where else "")
                    + "ORDER BY score DESC, c.id LIMIT %s"
                ),
                (*score_params, match, KEYWORD_CANDIDATES, *params, k),
            ).fetchall()
        return _hits(rows, "keyword")

    def hybrid_search(
        self,
        query: str,
        vector: np.ndarray,
        k: int,
        flt: SearchFilter | None = None,
        *,
        candidates: int = 40,
        rrf_k: int = 60,
    ) -> list[Hit]:
        """Dense + keyword from one snapshot, fused by reciprocal rank (what rag.retrieval does, in one call)."""
        with self.snapshot():
            return rrf_fuse(
                [self.dense_search(vector, candidates, flt), self.keyword_search(query, candidates, flt)], k, rrf_k
            )

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS} FROM {{s}}.chunks c JOIN {{s}}.documents d ON d.id = c.doc_id WHERE c.id = ANY(%s)"
                ),
                (list(chunk_ids),),
            ).fetchall()
        by_id = {r[0]: _row_to_chunk(r) for r in rows}
        return [by_id[c] for c in chunk_ids if c in by_id]

    def neighbours(self, chunk: Chunk, n: int) -> list[Chunk]:
        if n <= 0:
            return []
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS} FROM {{s}}.chunks c JOIN {{s}}.documents d ON d.id = c.doc_id "
                    "JOIN {s}.chunks me ON me.id = %s "
                    "WHERE c.doc_id = me.doc_id AND c.ordinal BETWEEN me.ordinal - %s AND me.ordinal + %s "
                    "AND c.id <> me.id ORDER BY c.ordinal"
                ),
                (chunk.id, n, n),
            ).fetchall()
        return [_row_to_chunk(r) for r in rows]

    # ------------------------------------------------------------------ bulk access (migration)
    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """Every chunk of one document, in order (export and migration read vectors via cached_vectors)."""
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {_CHUNK_COLUMNS} FROM {{s}}.chunks c JOIN {{s}}.documents d "
                    "ON d.id = c.doc_id WHERE c.doc_id = %s ORDER BY c.ordinal"
                ),
                (doc_id,),
            ).fetchall()
        return [_row_to_chunk(r) for r in rows]

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        """All chunks with their stored vectors, in (doc, ordinal) order (export and migration)."""
        last: tuple[str, int] = ("", -1)
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    self._sql(
                        f"SELECT {_CHUNK_COLUMNS}, c.embedding::text FROM {{s}}.chunks c JOIN {{s}}.documents d "
                        "ON d.id = c.doc_id WHERE (c.doc_id, c.ordinal) > (%s, %s) ORDER BY c.doc_id, c.ordinal LIMIT %s"
                    ),
                    (last[0], last[1], batch),
                ).fetchall()
            if not rows:
                return
            last = (rows[-1][1], rows[-1][9])
            yield [_row_to_chunk(r) for r in rows], np.stack([_parse_vec(r[-1]) for r in rows])

    def document_pages(self, doc_id: str) -> list[tuple[int, str]]:
        with self._tx() as conn:
            return [
                (int(n), str(t))
                for n, t in conn.execute(
                    self._sql("SELECT number, text FROM {s}.pages WHERE doc_id = %s ORDER BY number"), (doc_id,)
                )
            ]

    def document_metadata(self, doc_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute(self._sql("SELECT metadata FROM {s}.documents WHERE id = %s"), (doc_id,)).fetchone()
        if row is None:
            raise DocumentNotFound(f"document {doc_id!r} is not in knowledge base {self.name!r}")
        return dict(row[0])

    # ------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        with self._tx() as conn:
            docs = conn.execute(self._sql("SELECT count(*) FROM {s}.documents")).fetchone()[0]
            chunks = conn.execute(self._sql("SELECT count(*) FROM {s}.chunks")).fetchone()[0]
            pages = conn.execute(self._sql("SELECT count(*) FROM {s}.pages")).fetchone()[0]
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()[0]
        return {
            "name": self.name,
            "documents": int(docs),
            "chunks": int(chunks),
            "pages": int(pages),
            "embedder": self.embedder_id,
            "dim": self.dim,
            "backend": BACKEND,
            "index": {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
            "schema": self.schema,
            "url": _redact(self.url),
            "disk_bytes": int(size),
        }

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Load many documents fast: drop the HNSW index, load, then build it once (in parallel).

        Searches stay correct meanwhile (exact scans), only slower; use for imports and first loads.
        """
        with self._tx() as conn:
            conn.execute(self._sql("DROP INDEX IF EXISTS {s}.chunks_hnsw"))
        try:
            yield
        finally:
            self._create_hnsw()

    def _create_hnsw(self) -> None:
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                # The whole graph in memory (~1.8 GB at 1M x 384-d); no parallel workers, whose shared
                # memory segment would not fit a container's default 64 MB /dev/shm.
                conn.execute("SET maintenance_work_mem = '3GB'")
                conn.execute("SET max_parallel_maintenance_workers = 0")
                conn.execute(
                    self._sql(
                        "CREATE INDEX IF NOT EXISTS chunks_hnsw ON {s}.chunks USING hnsw (embedding vector_ip_ops) "
                        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
                    )
                )
            finally:
                conn.autocommit = False

    def rebuild_indexes(self) -> None:
        """Rebuild the HNSW and full-text indexes from the stored rows (no re-embedding)."""
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                conn.execute("SET maintenance_work_mem = '3GB'")
                conn.execute("SET max_parallel_maintenance_workers = 0")
                conn.execute(self._sql("REINDEX TABLE {s}.chunks"))
            finally:
                conn.autocommit = False
        self._create_hnsw()  # in case a bulk load was interrupted before building it

    def close(self) -> None:
        self._closed = True


def _doc_id_of(doc: ParsedDocument, chunks: list[Chunk]) -> str:
    """The caller sets doc ids on the chunks; a document without chunks gets its id from metadata or sha."""
    if chunks:
        return chunks[0].doc_id
    return str(doc.metadata.get("doc_id") or doc.sha256[:16])


def _parse_vec(text: str) -> np.ndarray:
    return np.asarray(json.loads(text), dtype=np.float32)


def _hits(rows: Sequence[Sequence[Any]], retriever: str) -> list[Hit]:
    return [
        Hit(chunk=_row_to_chunk(r), score=float(r[11]), rank=i + 1, retriever=retriever) for i, r in enumerate(rows)
    ]


def rrf_fuse(rankings: Sequence[Sequence[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Reciprocal-rank fusion of several rankings into one list of `k` hybrid hits."""
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (rrf_k + rank)
            chunks.setdefault(hit.chunk.id, hit.chunk)
    order = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
    return [Hit(chunk=chunks[cid], score=scores[cid], rank=i + 1, retriever="hybrid") for i, cid in enumerate(order)]


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
        pool = _pool(url)
        with pool.connection() as conn, conn.transaction():
            _ensure_global(conn)
            row = conn.execute("SELECT schema_name, manifest FROM citeqa.kbs WHERE name = %s", (name,)).fetchone()
            if row is None:
                if not create:
                    raise KnowledgeBaseNotFound(
                        f"knowledge base {name!r} does not exist in PostgreSQL at {_redact(url)}"
                    )
                manifest = Manifest.for_new_kb(
                    name,
                    BACKEND,
                    embedder_id,
                    dim,
                    settings.chunking.model_dump(),
                    {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
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
            _apply_migrations(conn, f"{schema}.migrations", KB_MIGRATIONS, s=schema, dim=manifest.dim)
        return PgvectorStore(pool, name, schema, manifest, url)

    def list_names(self, settings: Settings) -> list[str]:
        with _pool(self._url(settings)).connection() as conn, conn.transaction():
            _ensure_global(conn)
            return sorted(r[0] for r in conn.execute("SELECT name FROM citeqa.kbs"))

    def exists(self, settings: Settings, name: str) -> bool:
        with _pool(self._url(settings)).connection() as conn, conn.transaction():
            _ensure_global(conn)
            return conn.execute("SELECT 1 FROM citeqa.kbs WHERE name = %s", (name,)).fetchone() is not None

    def drop(self, settings: Settings, name: str) -> None:
        with _pool(self._url(settings)).connection() as conn, conn.transaction():
            _ensure_global(conn)
            row = conn.execute("DELETE FROM citeqa.kbs WHERE name = %s RETURNING schema_name", (name,)).fetchone()
            if row is not None:
                conn.execute(f"DROP SCHEMA IF EXISTS {row[0]} CASCADE")
