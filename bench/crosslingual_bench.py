"""Cross-lingual retrieval: English questions over Chinese documents and Chinese over English, by language pair.

    nice -n 19 .venv/bin/python bench/crosslingual_bench.py [--home DIR] [--kb bench] [--llm NAME] [--limit N]

Questions: bench/crosslingual.jsonl (30 Chinese bench dev questions translated into English and 30 English
into Chinese by hand; bench/README.md) and the 60 originals they were translated from, so each pair is
measured on the same evidence pages. A pair is question language → document language: en→zh and zh→en
(the translations), en→en and zh→zh (their originals). Variants: hybrid (default settings), dense only,
and hybrid + retrieval.query_translation="llm" (rag/retrieval/translate.py) with the default LLM
(qwen2.5-coder-1.5b; smollm2-135m when it is not available offline — the report says which ran).
Figures: page-hit@5, page-hit@1, MRR@10, doc-hit@5 (bench/retrieval_variants.py's scoring), retrieval
latency p50/p95 per variant, and for translation how many questions of each pair were translated and
translate_ms p50/p95 (the LLM call alone). Reads the KB of `bench/retrieval_quality.py ingest --all`
through a consistent copy (retrieval_variants.snapshot). -> bench/out/crosslingual.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.retrieval_variants import BENCH, DEFAULT_HOME, OUT, score, snapshot  # noqa: E402

QUESTIONS = REPO / "bench" / "crosslingual.jsonl"
PAIRS = ("en→zh", "zh→en", "en→en", "zh→zh")  # question language → document language
VARIANTS: dict[str, dict[str, Any]] = {
    "hybrid": {},
    "dense": {"mode": "dense"},
    "hybrid+translate": {"query_translation": "llm"},
}
METRICS = ("page_hit@5", "page_hit@1", "mrr@10", "doc_hit@5")


def load(limit: int) -> list[dict[str, Any]]:
    """The translated questions (the first `limit` of each language when > 0) and the originals they came from."""
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    if limit > 0:
        rows = [q for q in rows if q["language"] == "en"][:limit] + [q for q in rows if q["language"] == "zh"][:limit]
    originals = {
        q["id"]: q for q in map(json.loads, (BENCH / "questions.jsonl").read_text(encoding="utf-8").splitlines()) if q
    }
    out = []
    for q in rows:
        src = originals[q["translated_from"]]
        out.append({**q, "pair": f"{q['language']}→{q['doc_language']}"})
        out.append({**src, "doc_language": src["language"], "pair": f"{src['language']}→{src['language']}"})
    return out


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "p50": statistics.median(ordered), "p95": ordered[math.ceil(0.95 * len(ordered)) - 1]}


def llm_name(name: str, models_dir: Path) -> tuple[str, str]:
    """(the LLM setting to use, what ran): the GGUF file of `name`, or smollm2-135m when it is not here offline."""
    from rag.errors import ModelNotAvailable
    from rag.llm.models import resolve_gguf

    try:
        return str(resolve_gguf(name, models_dir)), name  # the snapshot home has no _models: pass the file
    except ModelNotAvailable as exc:
        print(f"{name} is not available offline ({exc}); using smollm2-135m", flush=True)
        return "smollm2-135m", "smollm2-135m"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="KB home (retrieval_quality.py's).")
    ap.add_argument("--kb", default="bench")
    ap.add_argument("--llm", default="qwen2.5-coder-1.5b", help="LLM that translates (default: the default LLM).")
    ap.add_argument("--limit", type=int, default=0, help="Only the first N translated questions per language.")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--tag", default="", help="Suffix of the output file under bench/out/.")
    args = ap.parse_args()

    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.llm import make_generator
    from rag.retrieval import make_retriever
    from rag.settings import load_settings

    llm, llm_ran = llm_name(args.llm, load_settings().paths.models_dir)
    questions = load(args.limit)
    home = snapshot(args.home, args.kb)
    try:
        settings = load_settings(overrides={"paths.home": home, "llm.name": llm})
        embedder = make_embedder(settings.embedder)
        store = open_kb(settings, args.kb, embedder)
        docs = store.list_documents()
        by_id = {d.id: Path(d.source).name for d in docs}
        missing = sorted({q["doc"] for q in questions} - set(by_id.values()))
        if missing:
            print(f"the KB lacks {len(missing)} question documents (their questions score 0): {missing}", flush=True)
        print(f"KB: {len(docs)} documents; {len(questions)} questions; translating LLM: {llm_ran}", flush=True)
        generator: list[Any] = []

        def load_llm() -> Any:  # loaded once, on the first cross-language question
            if not generator:
                generator.append(make_generator(settings))
            return generator[0]

        results: dict[str, Any] = {}
        for name in args.variants.split(","):
            retr = make_retriever(store, embedder, settings.retrieval.model_copy(update=VARIANTS[name]), load_llm)
            retr.retrieve("warm up", 10)
            retr.retrieve("预热", 10)  # loads the LLM (translate variant) outside the timed questions
            ranked, ms, translate_ms = [], [], []
            translated = dict.fromkeys(PAIRS, 0)
            translations: dict[str, str | None] = {}
            for q in questions:
                t = time.perf_counter()
                r = retr.retrieve(q["question"], 10)
                ms.append((time.perf_counter() - t) * 1000)
                ranked.append([(by_id.get(h.chunk.doc_id, h.chunk.doc), h.chunk.page_start) for h in r.hits])
                if "translate_ms" in r.timings:
                    translated[q["pair"]] += 1
                    target = "zh" if q["language"] == "en" else "en"
                    translations[q["id"]] = retr.translator.translate(q["question"], target)[0]  # cached: no call
                    if r.timings["translate_ms"] > 0:  # 0: the cached translation of a repeated question
                        translate_ms.append(r.timings["translate_ms"])
            by_pair = {p: score([q for q in questions if q["pair"] == p], [r for q, r in zip(questions, ranked, strict=True) if q["pair"] == p])["all"] for p in PAIRS}  # fmt: skip
            results[name] = {"pairs": by_pair, "retrieve_ms": spread(ms)}
            if VARIANTS[name].get("query_translation") == "llm":
                results[name].update(
                    translated=translated, translate_ms=spread(translate_ms), translations=translations
                )
            for p in (p for p in PAIRS if by_pair[p].get("n")):
                m = by_pair[p]
                print(f"{name:17s} {p}  n {m['n']:2d}  " + "  ".join(f"{k} {m[k]:.3f}" for k in METRICS), flush=True)
            extra = f"  translated {translated}  translate_ms {spread(translate_ms)}" if "translated" in results[name] else ""  # fmt: skip
            print(f"{name:17s} retrieve_ms {spread(ms)}{extra}", flush=True)
        store.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = {"kb": str(args.home / args.kb), "llm": llm_ran, "questions": len(questions), "results": results}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"crosslingual{('_' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lines = ["| variant | pair | n | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    for name, res in results.items():
        for p in (p for p in PAIRS if res["pairs"][p].get("n")):
            m = res["pairs"][p]
            lines.append(f"| {name} | {p} | {m['n']} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    print("\n".join(lines))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
