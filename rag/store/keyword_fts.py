"""Keyword search for the embedded store: SQLite FTS5 BM25 over pre-tokenized text.

Why FTS5 and not bm25s — measured with bench/retrieval_keyword.py (CPU time per query, the machine
being shared; 100k synthetic Zipf chunks, 6-word queries, k=40):
- update: making 50 new chunks searchable costs FTS5 3 ms inside the document's own transaction;
  bm25s has no incremental add, so it re-indexes everything (29 s at 100k, minutes at 1M) and its
  index file would sit outside SQLite's transaction, so a kill -9 could leave it out of step;
- query: bm25s 0.2 ms; plain FTS5 212 ms (it scores every row matching any term), FTS5 with the
  posting budget below 16 ms, and ~7 ms in the store where document frequencies are cached;
- quality: on the bench KB the two rank identically (page-hit@5 0.971 / MRR@10 0.921 vs 0.922):
  both are Okapi BM25 (k1=1.2, b=0.75) over the same tokens.
bm25s wins on raw query speed, but the incremental, crash-safe update is a requirement and FTS5's
query cost fits the 20 ms hybrid budget at 100k chunks, so the embedded store uses FTS5.

Text is analysed by rag.store.analyzer.tokenize (jieba for Chinese), then stored as space-joined tokens
in `chunks.tokens`; the FTS5 table indexes that column as external content, so the keyword index can
be rebuilt from SQLite alone (`INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')`).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict

from rag.store.analyzer import tokenize

# unicode61 folds case; keep '.', apostrophes and '-' inside tokens so the analyzer's tokens survive
# whole ("34.2", "company's"). Tokens are separated by single spaces.
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    tokens, content='chunks', content_rowid='rowid',
    tokenize="unicode61 remove_diacritics 0 tokenchars '.''’-_'"
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TRIGGER IF NOT EXISTS chunks_fts_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, tokens) VALUES (new.rowid, new.tokens);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, tokens) VALUES ('delete', old.rowid, old.tokens);
END;
"""

# FTS5 scores every row that matches any query term, so a query's cost grows with the postings of
# its terms. Terms are kept rarest first while their total postings stay within POSTING_BUDGET; the
# very common terms dropped this way carry little BM25 weight (idf ~ ln(N/df)). Measured on a
# synthetic Zipf corpus (bench/retrieval_keyword.py): without this, FTS5 query CPU time at 20k chunks
# was p50 40 ms; with a 10k-posting budget it is a few ms, and bounded however large the KB grows.
POSTING_BUDGET = 10_000
MAX_QUERY_TERMS = 32


def index_text(text: str) -> str:
    """What goes into chunks.tokens for a chunk's text."""
    return " ".join(tokenize(text))


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def query_terms(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for tok in tokenize(query):
        seen.setdefault(tok.lower(), None)
    return list(seen)[:MAX_QUERY_TERMS]


class DocFrequencies:
    """Document frequencies of terms, cached: FTS5's vocab table counts a term's postings on every
    lookup (~4 ms for six terms at 100k chunks), while df only steers which terms to keep, so a
    value is reused until the KB has grown or shrunk by a fifth since it was read."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, tuple[int, int]] = OrderedDict()  # term -> (df, rows then)

    def get(self, conn: sqlite3.Connection, terms: list[str], total_rows: int) -> dict[str, int]:
        out: dict[str, int] = {}
        missing: list[str] = []
        for t in terms:
            hit = self._cache.get(t)
            if hit is not None and 0.8 * hit[1] <= total_rows <= 1.25 * hit[1]:
                out[t] = hit[0]
                self._cache.move_to_end(t)
            else:
                missing.append(t)
        if missing:
            marks = ",".join("?" * len(missing))
            found = dict(
                conn.execute(
                    f"SELECT term, doc FROM chunks_fts_vocab WHERE term IN ({marks})",
                    missing,
                ).fetchall()
            )
            for t in missing:
                out[t] = int(found.get(t, 0))
                self._cache[t] = (out[t], total_rows)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return out


def match_expression(
    conn: sqlite3.Connection,
    terms: list[str],
    total_rows: int,
    dfs: DocFrequencies | None = None,
) -> str | None:
    """An FTS5 MATCH string OR-ing the useful query terms (rarest first, within the posting budget),
    or None when no term occurs in the index."""
    if not terms:
        return None
    if total_rows > POSTING_BUDGET and len(terms) > 1:
        df = (dfs or DocFrequencies()).get(conn, terms, total_rows)
        present = sorted((t for t in terms if df.get(t, 0) > 0), key=lambda t: df[t])
        if not present:
            return None
        kept = [present[0]]
        used = df[present[0]]
        for t in present[1:]:
            if used + df[t] > POSTING_BUDGET:
                break
            kept.append(t)
            used += df[t]
        terms = kept
    return " OR ".join(_quote(t) for t in terms)
