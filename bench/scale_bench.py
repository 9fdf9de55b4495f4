"""Store backends at scale: ingest throughput, hybrid latency, ANN recall, RSS and disk.

    nohup .venv/bin/python bench/scale_bench.py --backend pgvector --size 100000 > bench/out/scale_pg_100k.log 2>&1 &
    .venv/bin/python bench/scale_bench.py --backend faiss --size 1000000 --queries 200
    .venv/bin/python bench/scale_bench.py --backend faiss --real-kb bench/out/quality_home/bench   # real vectors

Synthetic corpus (same seed for every backend): 384-d unit vectors around 2,000 topic centres
(so nearest neighbours are meaningful, unlike uniform noise), chunk texts of ~40 tokens drawn from a
Zipf vocabulary plus the topic's own words (so BM25 has common and rare terms). Queries are perturbed
topic centres with three topic words. Exact top-10 for recall comes from numpy over all vectors.
Each run appends one JSON line to bench/out/scale_bench.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from rag.records import Chunk, Page, ParsedDocument
from rag.settings import load_settings
from rag.store import STORES

DIM = 384
TOPICS = 2000
DOC_CHUNKS = 1000
OUT = REPO / "bench" / "out"


def synthetic(n: int, seed: int = 7) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(vectors, texts, centres, topic per chunk)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, TOPICS, n)
    vecs = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        part = centres[topic[start:stop]] + 0.06 * rng.standard_normal((stop - start, DIM)).astype(np.float32)
        vecs[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    common = rng.zipf(1.3, size=(n, 30)) % 50_000
    own = rng.integers(0, 20, size=(n, 6))
    vocab = [word(i) for i in range(50_000)]
    texts = [
        " ".join(
            [vocab[c] for c in common[i]]
            + [topic_word(topic[i], o) for o in own[i]]
            + ["营业收入" if i % 7 == 0 else "现金流"]
        )
        for i in range(n)
    ]
    return vecs, texts, centres, topic


_LETTERS = "bcdfghjklmnpqrtvwxz"  # no vowels, no 's': the analyzer's stemmer leaves these words alone


def word(i: int) -> str:
    out = "q"
    while True:
        i, r = divmod(i, len(_LETTERS))
        out += _LETTERS[r]
        if i == 0:
            return out


def topic_word(topic: int, j: int) -> str:
    return "k" + word(topic * 20 + j)


def real_corpus(kb_dir: Path) -> tuple[np.ndarray, list[str]]:
    conn = sqlite3.connect(f"file:{kb_dir / 'kb.sqlite'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT c.text, v.vector FROM chunks c JOIN vectors v ON v.text_sha256 = c.text_sha256 ORDER BY c.rowid"
    ).fetchall()
    conn.close()
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1).copy()
    return vecs, [r[0] for r in rows]


def rss_mb(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["faiss", "pgvector", "milvus"], help="One backend (default: each in turn).")
    ap.add_argument("--size", type=int, default=100_000, help="Synthetic chunks (ignored with --real-kb).")
    ap.add_argument("--real-kb", type=Path, help="A faiss KB folder: reuse its stored embeddings and texts.")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--pg-url", help="Use this PostgreSQL instead of starting one from the pgserver wheel.")
    ap.add_argument("--keep", action="store_true", help="Keep the data directory.")
    args = ap.parse_args()
    if args.backend is None:  # `make bench`: every backend, each in its own process (Milvus Lite, pgserver)
        import subprocess

        extra = sys.argv[1:]
        return max(
            subprocess.call([sys.executable, __file__, "--backend", b, *extra]) for b in ("faiss", "pgvector", "milvus")
        )

    work = Path(tempfile.mkdtemp(prefix=f"citeqa-scale-{args.backend}-"))
    result: dict[str, object] = {"backend": args.backend, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    if args.real_kb:
        vecs, texts = real_corpus(args.real_kb)
        rng = np.random.default_rng(3)
        pick = rng.choice(len(vecs), size=min(args.queries, len(vecs)), replace=False)
        qvecs = vecs[pick] + 0.02 * rng.standard_normal((len(pick), vecs.shape[1])).astype(np.float32)
        qtexts = [" ".join(texts[i].split()[:6]) or texts[i][:12] for i in pick]
        result["corpus"] = f"real:{args.real_kb}"
    else:
        vecs, texts, centres, _ = synthetic(args.size)
        rng = np.random.default_rng(11)
        qt = rng.integers(0, TOPICS, args.queries)
        qvecs = centres[qt] + 0.08 * rng.standard_normal((args.queries, DIM)).astype(np.float32)
        qtexts = [
            f"{topic_word(t, rng.integers(0, 20))} {topic_word(t, rng.integers(0, 20))} 营业收入 {word(int(rng.integers(0, 50)))}"
            for t in qt
        ]
        result["corpus"] = "synthetic"
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    n, dim = vecs.shape
    result["chunks"] = n
    result["generate_s"] = round(time.perf_counter() - t0, 1)
    print(f"[{args.backend}] {n} chunks generated in {result['generate_s']} s", flush=True)

    settings = load_settings(
        overrides={"paths.home": str(work / "home"), "store.backend": args.backend, "retrieval.hnsw_threshold": 200_000}
    )
    server_pids: list[int] = []
    if args.backend == "pgvector":
        url = args.pg_url
        if url is None:
            from start_pgserver import start

            url = start(work / "pgdata", cleanup=None)
            import psutil

            pm = int((work / "pgdata" / "postmaster.pid").read_text().split()[0])
            server_pids = [pm]
        settings.store.url = url
    elif args.backend == "milvus":
        settings.store.url = str(work / "milvus.db")
    backend = STORES.create(args.backend)
    store = backend.open(settings, "scale", embedder_id="synthetic", dim=dim, create=True)

    t0 = time.perf_counter()
    bulk = getattr(store, "bulk", None)
    ctx = bulk() if bulk is not None else None
    if ctx is not None:
        ctx.__enter__()
    index_s = 0.0
    try:
        for d, start in enumerate(range(0, n, DOC_CHUNKS)):
            stop = min(n, start + DOC_CHUNKS)
            doc_id = f"d{d:06d}"
            doc = ParsedDocument(
                source=f"/bench/{doc_id}.pdf", sha256=f"{d:064x}", title=doc_id, pages=[Page(1, "synthetic")]
            )
            chunks = [
                Chunk(
                    id=f"{doc_id}:{i - start}",
                    doc_id=doc_id,
                    text=texts[i],
                    page_start=1,
                    page_end=1,
                    char_start=0,
                    char_end=len(texts[i]),
                    ordinal=i - start,
                )
                for i in range(start, stop)
            ]
            store.add_document(doc, chunks, vecs[start:stop])
            if d % 50 == 0:
                print(f"  {stop}/{n} after {time.perf_counter() - t0:.0f} s", flush=True)
        load_s = time.perf_counter() - t0
    finally:
        if ctx is not None:
            t1 = time.perf_counter()
            ctx.__exit__(None, None, None)
            index_s = time.perf_counter() - t1
    total_s = time.perf_counter() - t0
    if hasattr(store, "flush"):
        store.flush()  # type: ignore[attr-defined]
    result["ingest"] = {
        "load_s": round(load_s, 1),
        "index_build_s": round(index_s, 1),
        "total_s": round(total_s, 1),
        "vectors_per_s": round(n / total_s, 1),
    }
    print(f"[{args.backend}] ingest {result['ingest']}", flush=True)

    # Exact top-10 for recall (numpy, all vectors).
    truth = []
    id_of = [f"d{i // DOC_CHUNKS:06d}:{i % DOC_CHUNKS}" for i in range(n)]
    for q in qvecs:
        scores = vecs @ q
        top = np.argpartition(-scores, 10)[:10]
        truth.append({id_of[i] for i in top})

    from rag.retrieval.fusion import rrf_fuse

    def hybrid(text: str, vec: np.ndarray) -> list:
        if hasattr(store, "hybrid_search"):
            return store.hybrid_search(text, vec, 10)  # type: ignore[attr-defined]
        rankings = [("dense", 1.0, store.dense_search(vec, 40)), ("keyword", 1.0, store.keyword_search(text, 40))]
        return rrf_fuse(rankings, 60)[:10]

    for i in range(5):  # warm caches
        hybrid(qtexts[i], qvecs[i])
    dense_t: list[float] = []
    kw_t: list[float] = []
    hy_t: list[float] = []
    recall: list[float] = []
    for text, q, want in zip(qtexts, qvecs, truth):
        t = time.perf_counter()
        hits = store.dense_search(q, 10)
        dense_t.append(time.perf_counter() - t)
        recall.append(len({h.chunk.id for h in hits} & want) / 10)
        t = time.perf_counter()
        store.keyword_search(text, 10)
        kw_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        hybrid(text, q)
        hy_t.append(time.perf_counter() - t)
    result["latency_ms"] = {
        "hybrid_p50": pct(hy_t, 50),
        "hybrid_p95": pct(hy_t, 95),
        "dense_p50": pct(dense_t, 50),
        "dense_p95": pct(dense_t, 95),
        "keyword_p50": pct(kw_t, 50),
        "keyword_p95": pct(kw_t, 95),
    }
    result["recall_at_10"] = round(float(np.mean(recall)), 4)
    import psutil

    if server_pids:
        server_pids += [c.pid for c in psutil.Process(server_pids[0]).children(recursive=True)]
    result["rss_mb"] = {"client": rss_mb([os.getpid()]), "server": rss_mb(server_pids) if server_pids else None}
    stats = store.stats()
    result["disk_bytes"] = stats.get("disk_bytes") or dir_bytes(work)
    if args.backend == "pgvector" and server_pids:
        result["disk_bytes_data_dir"] = dir_bytes(work / "pgdata")
    result["index"] = stats.get("index")
    print(json.dumps(result), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "scale_bench.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    store.close()
    if args.backend == "pgvector" and server_pids:
        from start_pgserver import stop

        from rag.store.pgvector import close_pools

        close_pools()
        stop(work / "pgdata")
    if args.backend == "milvus":
        from rag.store.milvus import release

        release(str(settings.store.url))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
