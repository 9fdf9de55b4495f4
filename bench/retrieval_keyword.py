"""SQLite FTS5 vs bm25s for the keyword index: query latency, update cost, ranking quality.

    .venv/bin/python bench/retrieval_keyword.py latency --n 100000   # synthetic Zipf corpus
    .venv/bin/python bench/retrieval_keyword.py quality              # real bench KB (after retrieval_quality.py ingest)

latency: N synthetic chunks of 60 words from a Zipf(1.1) vocabulary of 50,000 words, queries of 6 words
from the same law. FTS5 is the store's own schema (external-content table + triggers); bm25s indexes the
same token lists. "update" = making 50 new chunks searchable in an index of N: one FTS5 transaction vs
re-indexing with bm25s (it has no incremental add). Both wall and CPU (thread) time are reported
because the machine is shared.
quality: keyword-only page-hit@5 / MRR@10 on the bench questions with the KB's stored tokens, ranked
by FTS5 (as the store does, with and without dropping very common query terms) and by bm25s.
Writes bench/out/retrieval_keyword_*.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
OUT = REPO / "bench" / "out"


def _pct(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"p50": v[len(v) // 2], "p95": v[min(len(v) - 1, int(0.95 * len(v)))]}


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    t, c = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000, (time.thread_time() - c) * 1000


def _fts_db(path: str) -> sqlite3.Connection:
    from rag.store.schema import connect, ensure_schema

    conn = connect(path)
    ensure_schema(conn)
    conn.execute("INSERT INTO documents(id, sha256, source, added_at) VALUES ('d', 'x', 'd.pdf', 0)")
    return conn


def _fts_insert(conn: sqlite3.Connection, docs: list[str], start: int) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO chunks(id, doc_id, ordinal, text, text_sha256, page_start, page_end, char_start, char_end, tokens) "
        "VALUES (?, 'd', ?, '', '', 1, 1, 0, 0, ?)",
        [(f"c{start + i}", start + i, d) for i, d in enumerate(docs)],
    )
    conn.execute("COMMIT")


def _fts_query(  # type: ignore[no-untyped-def]
    conn: sqlite3.Connection, terms: list[str], n: int, k: int, prune: bool, dfs=None
) -> list[int]:
    from rag.store import keyword_fts

    if prune:
        expr = keyword_fts.match_expression(conn, terms, n, dfs)
    else:
        expr = " OR ".join(f'"{t}"' for t in terms)
    if not expr:
        return []
    rows = conn.execute(
        "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
        (expr, k),
    ).fetchall()
    return [r[0] for r in rows]


def latency(n: int, queries: int, k: int, with_bm25s: bool = True) -> dict:
    import bm25s

    rng = np.random.default_rng(0)
    from retrieval_scale import _word

    vocab = np.array([_word(i) for i in range(50_000)])
    corpus = [" ".join(row) for row in vocab[np.minimum(rng.zipf(1.1, (n, 60)) - 1, len(vocab) - 1)]]
    qs = [[str(w) for w in vocab[np.minimum(rng.zipf(1.1, 6) - 1, len(vocab) - 1)]] for _ in range(queries)]
    res: dict = {"n": n, "queries": queries, "k": k}
    with tempfile.TemporaryDirectory() as tmp:
        conn = _fts_db(str(Path(tmp) / "fts.sqlite"))
        t = time.perf_counter()
        for s in range(0, n, 20_000):
            _fts_insert(conn, corpus[s : s + 20_000], s)
        res["fts5_build_s"] = time.perf_counter() - t
        extra = corpus[:50]
        _, wall, cpu = _timed(_fts_insert, conn, extra, n)
        res["fts5_update_50_ms"] = {"wall": wall, "cpu": cpu}
        from rag.store.keyword_fts import DocFrequencies

        warm = DocFrequencies()  # the store's df cache after earlier traffic (the first half of the queries)
        for q in qs[: len(qs) // 2]:
            _fts_query(conn, q, n, k, True, warm)
        variants = (("fts5", False, None), ("fts5_pruned", True, None), ("fts5_pruned_dfcache", True, warm))
        for name, prune, dfs in variants:
            walls, cpus = [], []
            for q in qs[len(qs) // 2 :]:
                _, w, c = _timed(_fts_query, conn, q, n, k, prune, dfs)
                walls.append(w)
                cpus.append(c)
            res[f"{name}_query_ms"] = {"wall": _pct(walls), "cpu": _pct(cpus)}
        conn.close()
    if not with_bm25s:
        return res

    tokens = [d.split() for d in corpus]
    t = time.perf_counter()
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    retriever.index(tokens, show_progress=False)
    res["bm25s_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    again = bm25s.BM25(k1=1.2, b=0.75)
    again.index(tokens + [d.split() for d in extra], show_progress=False)
    res["bm25s_update_50_ms"] = {
        "wall": (time.perf_counter() - t) * 1000,
        "note": "full re-index (no incremental add)",
    }
    walls, cpus = [], []
    for q in qs:
        _, w, c = _timed(
            lambda qq: retriever.retrieve([qq], k=k, show_progress=False, n_threads=1),
            q,
        )
        walls.append(w)
        cpus.append(c)
    res["bm25s_query_ms"] = {"wall": _pct(walls), "cpu": _pct(cpus)}
    return res


def quality() -> dict:
    import bm25s
    from retrieval_quality import BENCH, HOME, KB, _docs

    from rag.eval import load_questions, score_rankings
    from rag.store.keyword_fts import query_terms

    conn = sqlite3.connect(str(HOME / KB / "kb.sqlite"))
    rows = conn.execute(
        "SELECT c.rowid, d.source, c.page_start, c.tokens FROM chunks c JOIN documents d ON d.id=c.doc_id ORDER BY c.rowid"
    ).fetchall()
    n = len(rows)
    meta = {r[0]: (Path(r[1]).name, r[2]) for r in rows}
    names = {Path(r[1]).name for r in rows} & {p.name for p in _docs(False)}
    questions = [q for q in load_questions(BENCH / "questions.jsonl") if q["doc"] in names]
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    ids = [r[0] for r in rows]
    retriever.index([r[3].split() for r in rows], show_progress=False)
    out: dict = {"chunks": n, "questions": len(questions)}
    for name in ("fts5", "fts5_pruned", "bm25s"):
        ranked = []
        for q in questions:
            terms = query_terms(q["question"])
            if name == "bm25s":
                known = [t for t in terms if t in retriever.vocab_dict]
                if not known:
                    ranked.append([])
                    continue
                docs, _ = retriever.retrieve([known], k=10, show_progress=False)
                ranked.append([meta[ids[int(i)]] for i in docs[0]])
            else:
                ranked.append([meta[r] for r in _fts_query(conn, terms, n, 10, name == "fts5_pruned")])
        scored = score_rankings(questions, ranked, (1, 5, 10))
        out[name] = {"overall": scored["overall"], "by_language": scored["by_language"]}
        print(
            name,
            json.dumps({k: round(v, 3) for k, v in scored["overall"].items() if isinstance(v, float)}),
        )
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["latency", "quality"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-bm25s", action="store_true", help="FTS5 only (e.g. at 1M chunks)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "latency":
        res = latency(args.n, args.queries, 40, not args.no_bm25s)
        (OUT / f"retrieval_keyword_latency_{args.n}.json").write_text(json.dumps(res, indent=2))
    else:
        res = quality()
        (OUT / "retrieval_keyword_quality.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2)[:3000])


if __name__ == "__main__":
    main()
