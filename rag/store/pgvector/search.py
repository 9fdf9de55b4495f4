"""Dense, keyword and hybrid search over one pgvector KB (a mixin of PgvectorStore), and the value codecs.

pgvector 0.6's HNSW scan stops after `hnsw.ef_search` candidates and applies a WHERE filter
afterwards, so filtered searches can return too few rows. Filtered searches therefore use an
exact scan when the filter is narrow and an over-fetching HNSW scan (checked, then exact as a last
resort) when it is wide — results are always complete.

Keyword search is PostgreSQL full-text search over the tokens of rag.store.analyzer (jieba for
Chinese): the tsvector is built from the analyzer's tokens directly (a tsvector literal, no
re-parsing by a text search config), ranked BM25-like (idf-weighted ts_rank).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.protocols import SearchFilter
from rag.records import Hit
from rag.store.analyzer import tokenize
from rag.store.common import CHUNK_FIELDS, any_of, chunk_from_row

if TYPE_CHECKING:
    from psycopg import Connection

EF_SEARCH_MIN = 64
EF_SEARCH_MAX = 1000  # pgvector 0.6's upper bound for hnsw.ef_search
EXACT_FILTER_ROWS = 50_000  # filtered searches over at most this many chunks scan exactly
MAX_QUERY_TERMS = 32
KEYWORD_CANDIDATES = 50_000  # rows ranked at most per keyword query
MAX_POSITIONS = 255  # a tsvector keeps at most 256 positions per lexeme

# The shared CHUNK_FIELDS order; `source` comes from the documents table. A score column follows in searches.
CHUNK_COLUMNS = ", ".join("d.source" if f == "source" else f"c.{f}" for f in CHUNK_FIELDS)
_SCORE = len(CHUNK_FIELDS)

_VEC_FORMATS: dict[int, str] = {}


def vec_text(v: np.ndarray) -> str:
    """pgvector's text form; %.9g round-trips float32 exactly (and is 4x faster than repr)."""
    values = np.asarray(v, dtype=np.float32).ravel().tolist()
    fmt = _VEC_FORMATS.get(len(values))
    if fmt is None:
        fmt = _VEC_FORMATS.setdefault(len(values), "[" + ",".join(["%.9g"] * len(values)) + "]")
    return fmt % tuple(values)


def parse_vec(text: str) -> np.ndarray:
    return np.asarray(json.loads(text), dtype=np.float32)


def quote_lexeme(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(text: str) -> str:
    """The analyzer's tokens as a tsvector literal with positions (no re-tokenising by PostgreSQL)."""
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(tokenize(text), start=1):
        plist = positions.setdefault(token, [])
        if len(plist) < MAX_POSITIONS:
            plist.append(min(i, 16383))
    return " ".join(f"{quote_lexeme(t)}:{','.join(map(str, p))}" for t, p in positions.items())


def hits(rows: Sequence[Sequence[Any]], retriever: str) -> list[Hit]:
    return [
        Hit(chunk=chunk_from_row(r), score=float(r[_SCORE]), rank=i + 1, retriever=retriever)
        for i, r in enumerate(rows)
    ]


class PgSearch:
    """Search methods of PgvectorStore; it provides `_tx`, `_sql` and `snapshot`."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _sql(self, statement: str) -> str: ...

        def snapshot(self) -> AbstractContextManager[None]: ...

    def _filter_sql(self, flt: SearchFilter | None) -> tuple[str, list[Any]]:
        if not flt:
            return "", []
        clauses: list[str] = []
        params: list[Any] = []
        if flt.doc_ids:
            clauses.append("c.doc_id = ANY(%s)")
            params.append(list(flt.doc_ids))
        for key, value in (flt.metadata or {}).items():
            clauses.append("c.doc_id IN (SELECT id FROM {s}.documents WHERE metadata -> %s = ANY(%s::jsonb[]))")
            params += [str(key), [json.dumps(v) for v in any_of(value)]]
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
        q = vec_text(vector)
        scored = f"SELECT {CHUNK_COLUMNS}, -(c.embedding <#> %s::vector) AS score FROM {{s}}.chunks c "
        scored += "JOIN {s}.documents d ON d.id = c.doc_id "
        with self._tx() as conn:
            if not flt:
                ef = min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, 2 * k))
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                # Chunks still queued to embed (embedding NULL) are not in the HNSW index; an exact scan
                # (no index, during a bulk load) would sort them last with a NULL score, so exclude them.
                rows = conn.execute(
                    self._sql(scored + "WHERE c.embedding IS NOT NULL ORDER BY c.embedding <#> %s::vector LIMIT %s"),
                    (q, q, k),
                ).fetchall()
                return hits(rows, "dense")
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
                        f"SELECT * FROM ({scored}WHERE c.embedding IS NOT NULL "
                        "ORDER BY c.embedding <#> %s::vector LIMIT %s) c "
                        f"WHERE {where} ORDER BY score DESC LIMIT %s"
                    ),
                    (q, q, max(fetch, EF_SEARCH_MIN), *params, k),
                ).fetchall()
                if len(rows) >= want:
                    return hits(rows, "dense")
            # Narrow filter (or the over-fetch came up short): exact scan of the filtered chunks.
            # `+ 0` keeps the planner off the HNSW index, whose scan would drop filtered rows.
            rows = conn.execute(
                self._sql(
                    scored
                    + f"WHERE {where} AND c.embedding IS NOT NULL ORDER BY (c.embedding <#> %s::vector) + 0 LIMIT %s"
                ),
                (q, *params, q, k),
            ).fetchall()
            return hits(rows, "dense")

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
                ([quote_lexeme(t) for t in terms],),
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
            inner = ", ".join(f for f in CHUNK_FIELDS if f != "source")
            rows = conn.execute(
                self._sql(
                    f"SELECT {CHUNK_COLUMNS}, ({score_sql}) AS score FROM "
                    f"(SELECT {inner}, tsv FROM {{s}}.chunks WHERE tsv @@ %s::tsquery LIMIT %s) c "
                    "JOIN {s}.documents d ON d.id = c.doc_id "
                    + (f"WHERE {where} " if where else "")
                    + "ORDER BY score DESC, c.id LIMIT %s"
                ),
                (*score_params, match, KEYWORD_CANDIDATES, *params, k),
            ).fetchall()
        return hits(rows, "keyword")

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
        from rag.retrieval.fusion import rrf_fuse  # the retrieval layer's one fusion; imported late (it sits above)

        with self.snapshot():
            rankings = [
                ("dense", 1.0, self.dense_search(vector, candidates, flt)),
                ("keyword", 1.0, self.keyword_search(query, candidates, flt)),
            ]
        return rrf_fuse(rankings, rrf_k)[:k]
