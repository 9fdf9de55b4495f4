"""Retrieval mechanisms alone and together, against a page-level BM25 baseline, on one knowledge base.

    .venv/bin/python bench/retrieval_variants.py [--home DIR] [--kb bench] [--tag NAME]

Reads the KB that `bench/retrieval_quality.py ingest --all` builds (a consistent copy is taken first,
so a KB still being ingested can be measured), and the bench questions with evidence pages whose
document it holds. Variants: today's hybrid, + document routing, + page fusion (max / sum), + period
matching, all together; baseline: bm25s + jieba over whole PyMuPDF pages of the same documents.
Figures: page-hit@5, page-hit@1, MRR@10 (first hit on an evidence page), doc-hit@5 — overall, by
language, by source — on two halves of the questions: `tune` (ids hashing even: choose settings
here) and `held` (odd: report), and retrieval latency p50/p95 per variant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCH = REPO.parent / "shared" / "bench"
OUT = REPO / "bench" / "out"
DEFAULT_HOME = Path("/work/bench_home/quality53/out/quality_home")

# Each variant is spelled out from the mechanisms' off state, so the names keep their meaning whatever the
# defaults are (routing, page_fusion="max" and concepts are on by default since issue 15).
OFF: dict[str, Any] = {"routing": False, "page_fusion": "off", "periods": False, "concepts": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "hybrid": {},
    "+routing": {"routing": True},
    "+pages(max)": {"page_fusion": "max"},
    "+pages(sum)": {"page_fusion": "sum"},
    "+periods": {"periods": True},
    "+periods(query)": {"periods": True, "period_weight": 0.0},
    "+concepts": {"concepts": True},
    "+concepts(1.0)": {"concepts": True, "concept_weight": 1.0},
    "routing+pages+concepts": {"routing": True, "page_fusion": "max", "concepts": True},
    "all(max)": {"routing": True, "page_fusion": "max", "periods": True},
    "all(sum)": {"routing": True, "page_fusion": "sum", "periods": True},
}

Ranked = list[tuple[str, int]]  # (document file name, page) best first


def half(qid: str) -> str:
    return "tune" if int(hashlib.sha256(qid.encode()).hexdigest(), 16) % 2 == 0 else "held"


def snapshot(home: Path, kb: str) -> Path:
    """A consistent copy of the KB (SQLite online backup + manifest): the ingest may still be writing."""
    tmp = Path(tempfile.mkdtemp(prefix="citeqa-variants-"))
    (tmp / kb).mkdir()
    src = sqlite3.connect(f"file:{home / kb / 'kb.sqlite'}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp / kb / "kb.sqlite")
    src.backup(dst)
    src.close()
    dst.close()
    shutil.copy(home / kb / "manifest.json", tmp / kb / "manifest.json")
    return tmp


def score(questions: list[dict], ranked: list[Ranked]) -> dict[str, Any]:
    def metrics(pairs: list[tuple[dict, Ranked]]) -> dict[str, float]:
        n = len(pairs)
        if not n:
            return {"n": 0}
        hit5 = hit1 = mrr = doc5 = 0.0
        for q, r in pairs:
            pages = set(q["evidence_pages"])
            on_page = [i for i, (doc, page) in enumerate(r[:10]) if doc == q["doc"] and page in pages]
            hit5 += bool(on_page and on_page[0] < 5)
            hit1 += bool(on_page and on_page[0] == 0)
            mrr += 1 / (on_page[0] + 1) if on_page else 0.0
            doc5 += any(doc == q["doc"] for doc, _ in r[:5])
        return {
            "n": n,
            "page_hit@5": hit5 / n,
            "page_hit@1": hit1 / n,
            "mrr@10": mrr / n,
            "doc_hit@5": doc5 / n,
        }

    pairs = list(zip(questions, ranked, strict=True))
    out: dict[str, Any] = {"all": metrics(pairs)}
    for key in ("language", "source_dataset"):
        for value in sorted({q[key] for q in questions}):
            out[f"{key}={value}"] = metrics([p for p in pairs if p[0][key] == value])
    for h in ("tune", "held"):
        out[f"half={h}"] = metrics([p for p in pairs if half(p[0]["id"]) == h])
        for lang in ("en", "zh"):
            out[f"half={h},language={lang}"] = metrics(
                [p for p in pairs if half(p[0]["id"]) == h and p[0]["language"] == lang]
            )
    return out


def page_bm25(names: list[str]) -> Callable[[str], Ranked]:
    """The page-level baseline: bm25s over whole PyMuPDF pages, jieba words for Chinese, English stemmed."""
    import bm25s
    import jieba
    import pymupdf
    import Stemmer

    jieba.setLogLevel(60)
    stemmer = Stemmer.Stemmer("english")
    keys: list[tuple[str, int]] = []
    texts: list[str] = []
    for name in names:
        with pymupdf.open(BENCH / "docs" / name) as pdf:
            for i, page in enumerate(pdf, start=1):
                keys.append((name, i))
                texts.append(page.get_text("text"))

    def tokens(text: str) -> list[str]:
        words = [w.strip().lower() for w in jieba.cut(text) if w.strip() and any(c.isalnum() for c in w)]
        return stemmer.stemWords(words)

    retriever = bm25s.BM25()
    retriever.index([tokens(t) for t in texts], show_progress=False)

    def search(question: str) -> Ranked:
        q = tokens(question)
        if not q:
            return []
        docs, _scores = retriever.retrieve([q], k=10, show_progress=False)
        return [keys[int(i)] for i in docs[0]]

    return search


def unique_pages(ranked: Ranked) -> Ranked:
    """A chunk ranking as pages, each page once at its best rank."""
    return list(dict.fromkeys(ranked))


def fuse_pages(a: Ranked, b: Ranked, k: int = 60) -> Ranked:
    """Page-level RRF of two page rankings (an experiment: would a page keyword index help?)."""
    scores: dict[tuple[str, int], float] = {}
    for ranking in (a, b):
        for r, key in enumerate(unique_pages(ranking)):
            scores[key] = scores.get(key, 0.0) + 1 / (k + r + 1)
    return sorted(scores, key=lambda key: -scores[key])[:10]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="KB home (retrieval_quality.py's).")
    ap.add_argument("--kb", default="bench")
    ap.add_argument("--tag", default="", help="Suffix of the output files under bench/out/.")
    ap.add_argument("--embedder", default=None, help="The KB's embedder, when not the default (e.g. use).")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset of: " + ", ".join(VARIANTS))
    args = ap.parse_args()

    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.retrieval import make_retriever
    from rag.settings import load_settings

    home = snapshot(args.home, args.kb)
    try:
        settings = load_settings(overrides={"paths.home": home, "embedder.name": args.embedder})
        embedder = make_embedder(settings.embedder)
        store = open_kb(settings, args.kb, embedder)
        docs = store.list_documents()
        names = sorted({Path(d.source).name for d in docs})
        all_q = [json.loads(line) for line in (BENCH / "questions.jsonl").read_text().splitlines() if line.strip()]
        questions = [q for q in all_q if q["doc"] in names and q["evidence_pages"] and q.get("answerable", True)]
        pages = sum(d.pages for d in docs)
        chunks = sum(d.chunks for d in docs)
        print(f"KB: {len(docs)} documents, {pages} pages, {chunks} chunks; {len(questions)} questions", flush=True)
        by_id = {d.id: Path(d.source).name for d in docs}
        results: dict[str, Any] = {}
        rankings: dict[str, list[Ranked]] = {}
        latency: dict[str, dict[str, float]] = {}
        for name in args.variants.split(","):
            retr = make_retriever(store, embedder, settings.retrieval.model_copy(update={**OFF, **VARIANTS[name]}))
            retr.retrieve("warm up", 10)
            ranked, ms = [], []
            for q in questions:
                t = time.perf_counter()
                r = retr.retrieve(q["question"], 10)
                ms.append((time.perf_counter() - t) * 1000)
                ranked.append([(by_id.get(h.chunk.doc_id, h.chunk.doc), h.chunk.page_start) for h in r.hits])
            results[name] = score(questions, ranked)
            rankings[name] = ranked
            latency[name] = {"p50_ms": statistics.median(ms), "p95_ms": sorted(ms)[int(0.95 * (len(ms) - 1))]}
            a = results[name]["all"]
            print(f"{name:14s} page@5 {a['page_hit@5']:.3f} page@1 {a['page_hit@1']:.3f} "
                  f"mrr {a['mrr@10']:.3f} doc@5 {a['doc_hit@5']:.3f}  p50 {latency[name]['p50_ms']:.0f} ms", flush=True)  # fmt: skip
        store.close()
        t = time.perf_counter()
        search = page_bm25(names)
        build_s = time.perf_counter() - t
        bm25_ranked = [search(q["question"]) for q in questions]
        results["page-bm25"] = score(questions, bm25_ranked)
        a = results["page-bm25"]["all"]
        print(f"{'page-bm25':14s} page@5 {a['page_hit@5']:.3f} page@1 {a['page_hit@1']:.3f} "
              f"mrr {a['mrr@10']:.3f} doc@5 {a['doc_hit@5']:.3f}  (index built in {build_s:.0f} s)")  # fmt: skip
        # Experiments, page-level (each page once): a variant's pages alone, and fused with page BM25.
        for name in [v for v in ("hybrid", "routing+pages+concepts") if v in rankings]:
            for label, fused in (
                (f"{name} [pages]", [unique_pages(r) for r in rankings[name]]),
                (f"{name} [pages]+page-bm25", [fuse_pages(r, b) for r, b in zip(rankings[name], bm25_ranked)]),
            ):
                results[label] = score(questions, fused)
                a = results[label]["all"]
                print(f"{label:14s} page@5 {a['page_hit@5']:.3f} page@1 {a['page_hit@1']:.3f} "
                      f"mrr {a['mrr@10']:.3f} doc@5 {a['doc_hit@5']:.3f}")  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = {"documents": names, "pages": pages, "chunks": chunks, "results": results, "latency": latency}
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"retrieval_variants{('_' + args.tag) if args.tag else ''}"
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    groups = [g for g in next(iter(results.values())) if results["hybrid"][g].get("n")]
    lines = ["| group | n | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    for g in groups:
        cells = [f"{results[v][g]['page_hit@5']:.3f}" if results[v][g].get("n") else "—" for v in results]
        lines.append(f"| {g} | {results['hybrid'][g]['n']} | " + " | ".join(cells) + " |")
    (OUT / f"{stem}.md").write_text("page-hit@5\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
