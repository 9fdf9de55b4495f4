"""Grounded-answer benchmark with the default model (Qwen2.5-Coder-1.5B).

Two question sets (`--set`):
  - bench: a subset of ../shared/bench (small documents: embedding is the slow part), ≥ 40 questions
    in Chinese and English plus bench/unanswerable.jsonl — the dev set the answer step was tuned on;
  - unseen: the frozen set in bench/unseen (74 questions over 5 Debian PDFs nobody tuned on, written
    before any tuning; bench/unseen/fetch.py downloads the PDFs).
`--code DIR` answers with the rag package of another checkout (e.g. a worktree of an older commit),
so the old and the new answer step run in one session over the same knowledge base.

It reports:
  - share of answerable questions answered with ≥ 1 verified citation
  - share of shown citations whose quote is on the cited page — checked twice: exactly against the
    store's page text (page_text[char_start:char_end] == quote) and independently against the PDF
    page re-extracted with PyMuPDF (letters/digits only, so whitespace and de-hyphenation do not count)
  - share of citations on a gold evidence page (where the bench gives evidence pages)
  - refusal rate on unanswerable questions (goal ≥ 90%)
  - false-refusal rate on answerable questions whose evidence was retrieved (goal ≤ 15%)
  - correct answers (rag/scoring.py: numbers must match, then token / character-bigram F1), overall
    and among the answers with a verified citation
  - all of it by language pair (question -> document)
  - time to first token, tokens/s, prompt tokens per answer

Results go to bench/out/answers_bench[_TAG].jsonl (one line per question, resumable) and
bench/out/answers_bench[_TAG]_summary.{json,md} (rewritten after every question, so a cut-short run still
reports). Run: nohup .venv/bin/python bench/answers_bench.py > bench/out/answers_bench.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# --code DIR: import the answer step from another checkout (read before anything imports rag)
CODE = Path(sys.argv[sys.argv.index("--code") + 1]).resolve() if "--code" in sys.argv[:-1] else REPO
sys.path.insert(0, str(CODE))

BENCH = REPO.parent / "shared" / "bench"
OUT = REPO / "bench" / "out"
# Small documents only: on the shared 2-core machine embedding ran at ~0.15 chunks/s under load.
ZH_DOCS = [f"cmrc2018_zhwiki_vol0{i}.pdf" for i in range(1, 5)]
EN_DOCS = [
    "financebench__ULTABEAUTY_2023Q4_EARNINGS.pdf",
    "financebench__MGMRESORTS_2022Q4_EARNINGS.pdf",
    "financebench__JOHNSON_JOHNSON_2023_8K_dated-2023-08-30.pdf",
    "financebench__BESTBUY_2024Q2_10Q.pdf",
]
KB = "answers_bench"
STEM = "answers_bench"  # output file stem; --tag adds a suffix
UNSEEN = REPO / "bench" / "unseen"
UNSEEN_DOCS = Path.home() / ".cache" / "citeqa" / "unseen"
DOC_DIR = BENCH / "docs"


def _scoring():  # type: ignore[no-untyped-def]
    """rag.scoring of this checkout, whichever checkout --code answers with: imported from REPO,
    then every `rag` module is dropped again so the answer step is imported from CODE."""
    import importlib

    def ours(name: str) -> bool:
        return name == "rag" or name.startswith("rag.")

    if CODE == REPO:
        # One copy of rag: dropping it would leave the parser workers (forkserver, which re-imports this
        # script) with another rag.records than their results are pickled against.
        return importlib.import_module("rag.scoring")
    sys.path.insert(0, str(REPO))
    try:
        module = importlib.import_module("rag.scoring")
    finally:
        sys.path.remove(str(REPO))
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
    return module


def load_unseen() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (UNSEEN / "questions.jsonl").open(encoding="utf-8") if line.strip()]
    for q in rows:
        q["kind"] = "answerable" if q["answerable"] else "unanswerable"
        q["type"] = q.get("kind")
    return rows


def _norm(text: str) -> str:
    """Letters and digits only, NFKC-folded: a PDF's "ﬀ" ligature is the "ff" a reader searches for."""
    return "".join(re.findall(r"\w", unicodedata.normalize("NFKC", text))).lower()


SCORING = _scoring()


def load_questions(limit_zh: int, limit_en: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (BENCH / "questions.jsonl").open(encoding="utf-8")]
    zh = [q for q in rows if q["doc"] in ZH_DOCS and q["answerable"]][:limit_zh]
    en = [q for q in rows if q["doc"] in EN_DOCS and q["answerable"]][:limit_en]
    unans = [json.loads(line) for line in (REPO / "bench" / "unanswerable.jsonl").open(encoding="utf-8")]
    unans += [q for q in rows if not q["answerable"]]
    unans = [q for q in unans if q["doc"] in ZH_DOCS + EN_DOCS]
    for q in unans:
        q["kind"] = "unanswerable"
    for q in zh + en:
        q["kind"] = "answerable"
    # interleave so a run cut short still covers both languages and the unanswerable set
    ordered: list[dict[str, Any]] = []
    for i in range(max(len(zh), len(en), len(unans))):
        for group in (zh, en, unans):
            if i < len(group):
                ordered.append(group[i])
    return ordered


def ingest(settings, embedder, store, names: list[str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    paths = [DOC_DIR / name for name in names]
    from ingest.pipeline import ingest_paths

    summary = ingest_paths(paths, store, embedder, settings)
    return summary.to_json()


def pdf_pages(name: str) -> list[str]:
    import pymupdf

    with pymupdf.open(str(DOC_DIR / name)) as doc:
        return [_norm(page.get_text()) for page in doc]


def evaluate(q: dict[str, Any], answer, store, pdf_cache: dict[str, list[str]], raw: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    evidence = set(q.get("evidence_pages") or [])
    sources = [(h.chunk.doc, h.chunk.page_start, h.chunk.page_end, round(h.score, 4)) for h in answer.sources]
    if evidence:
        retrieved = any(d == q["doc"] and any(p in evidence for p in range(ps, pe + 1)) for d, ps, pe, _ in sources)
    else:
        retrieved = any(d == q["doc"] for d, *_ in sources)
    cites = []
    for c in answer.citations:
        exact = store.page_text(c.doc_id, c.page)[c.char_start : c.char_end] == c.quote
        if c.doc not in pdf_cache:
            pdf_cache[c.doc] = pdf_pages(c.doc)
        pages = pdf_cache[c.doc]
        on_pdf = 1 <= c.page <= len(pages) and _norm(c.quote) in pages[c.page - 1]
        no_text_layer = 1 <= c.page <= len(pages) and len(pages[c.page - 1]) < 80  # an OCR'd page: nothing to compare
        cites.append(
            {
                "n": c.n,
                "doc": c.doc,
                "page": c.page,
                "quote": c.quote,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "exact_on_page": exact,
                "on_pdf_page": on_pdf,
                "pdf_page_has_no_text": no_text_layer,
                "evidence_page": (c.doc == q["doc"] and c.page in evidence) if evidence else None,
            }
        )
    gold = str(q.get("answer", ""))
    doc_lang = q.get("doc_language") or ("zh" if q["doc"].startswith("cmrc") else "en")
    score = SCORING.correctness(answer.text, gold, refused=answer.refused) if q["kind"] == "answerable" else {}
    return {
        "pair": f"{q.get('language')}->{doc_lang}",
        "correct": score.get("correct"),
        "f1": score.get("f1"),
        "numbers_match": score.get("numbers_match"),
        "evidence_shown": len(getattr(answer, "evidence", []) or []),
        "id": q["id"],
        "language": q.get("language"),
        "kind": q["kind"],
        "set": q.get("set", ""),
        "question": q["question"],
        "doc": q["doc"],
        "gold": gold[:300],
        "raw": raw,
        "answer": answer.text,
        "refused": answer.refused,
        "citations": cites,
        "unsupported": answer.unsupported,
        "sources": sources,
        "evidence_retrieved": retrieved,
        "gold_in_answer": bool(gold) and len(gold) <= 40 and _norm(gold) in _norm(answer.text),
        "timings": answer.timings,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def share(num: int, den: int) -> float | None:
        return round(num / den, 4) if den else None

    ans = [r for r in rows if r["kind"] == "answerable"]
    una = [r for r in rows if r["kind"] == "unanswerable"]
    cites = [c for r in rows if not r["refused"] for c in r["citations"]]
    with_ev = [r for r in ans if r["evidence_retrieved"]]
    ev_cites = [c for c in cites if c["evidence_page"] is not None]
    generated = [r for r in rows if "first_token" in r["timings"]]
    for r in generated:  # decode speed from the raw timings (older rows measured tokens/s incl. prefill)
        t = r["timings"]
        prefill = t["first_token"] - t.get("retrieve", 0) - t.get("prompt", 0) - t.get("rewrite", 0)
        decode = t["generate"] - prefill
        if t.get("completion_tokens", 0) > 1 and decode > 0:
            t["decode_tokens_per_s"] = (t["completion_tokens"] - 1) / decode
            t["prefill_ms_per_token"] = 1000 * prefill / max(1.0, t["prompt_tokens"])

    def stat(key: str) -> dict[str, float] | None:
        values = sorted(r["timings"][key] for r in (generated if key != "evidence" else rows) if key in r["timings"])
        if not values:
            return None
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        return {
            "mean": round(statistics.mean(values), 2),
            "median": round(statistics.median(values), 2),
            "p95": round(p95, 2),
            "n": len(values),
        }

    out: dict[str, Any] = {
        "questions": len(rows),
        "answerable": len(ans),
        "answerable_zh": sum(r["language"] == "zh" for r in ans),
        "answerable_en": sum(r["language"] == "en" for r in ans),
        "unanswerable": len(una),
        "answers_with_verified_citation": share(sum(bool(r["citations"]) and not r["refused"] for r in ans), len(ans)),
        "citations_shown": len(cites),
        "citations_exact_on_page": share(sum(c["exact_on_page"] for c in cites), len(cites)),
        "citations_on_pdf_page": share(sum(c["on_pdf_page"] for c in cites), len(cites)),
        "citations_on_evidence_page": share(sum(bool(c["evidence_page"]) for c in ev_cites), len(ev_cites)),
        "refusal_rate_unanswerable": share(sum(r["refused"] for r in una), len(una)),
        # written after the verification rules were tuned on the others: the honest figure
        "refusal_rate_unanswerable_held_out": share(
            sum(r["refused"] for r in una if r.get("set") == "held-out"), sum(r.get("set") == "held-out" for r in una)
        ),
        "answerable_with_evidence_retrieved": len(with_ev),
        "false_refusal_rate_evidence_retrieved": share(sum(r["refused"] for r in with_ev), len(with_ev)),
        "refusal_rate_answerable_all": share(sum(r["refused"] for r in ans), len(ans)),
        "gold_short_answer_in_text": share(
            sum(r["gold_in_answer"] for r in ans), sum(len(r["gold"]) <= 40 for r in ans)
        ),
        "unsupported_sentences_per_answer": round(statistics.mean([len(r["unsupported"]) for r in rows]), 3)
        if rows
        else None,
        "first_token_s": stat("first_token"),
        "decode_tokens_per_s": stat("decode_tokens_per_s"),
        "prefill_ms_per_prompt_token": stat("prefill_ms_per_token"),
        "prompt_tokens": stat("prompt_tokens"),
        "prompt_tokens_evaluated": stat("prompt_eval_tokens"),  # what llama.cpp evaluated (prefixes reused)
        "evidence_shown_s": stat("evidence"),  # question -> retrieved evidence on screen
        "completion_tokens": stat("completion_tokens"),
        "total_s": stat("total"),
        "retrieve_s": stat("retrieve"),
    }
    answered = [r for r in ans if r["citations"] and not r["refused"]]
    out["correct"] = share(sum(bool(r.get("correct")) for r in ans), len(ans))
    out["correct_of_answered"] = share(sum(bool(r.get("correct")) for r in answered), len(answered))
    out["refusals_with_passages_shown"] = share(
        sum(bool(r.get("evidence_shown")) for r in rows if r["refused"]), sum(r["refused"] for r in rows)
    )
    out["unanswerable_with_passages_shown"] = share(sum(bool(r.get("evidence_shown")) for r in una), len(una))
    for lang in ("zh", "en"):
        sub = [r for r in ans if r["language"] == lang]
        out[f"answers_with_verified_citation_{lang}"] = share(
            sum(bool(r["citations"]) and not r["refused"] for r in sub), len(sub)
        )
    pairs: dict[str, Any] = {}
    for pair in sorted({r.get("pair", "?") for r in rows}):
        sub = [r for r in ans if r.get("pair") == pair]
        sub_ev = [r for r in sub if r["evidence_retrieved"]]
        sub_ok = [r for r in sub if r["citations"] and not r["refused"]]
        sub_un = [r for r in una if r.get("pair") == pair]
        sub_c = [c for r in rows if r.get("pair") == pair and not r["refused"] for c in r["citations"]]
        pairs[pair] = {
            "answerable": len(sub),
            "answered_with_verified_citation": share(len(sub_ok), len(sub)),
            "correct": share(sum(bool(r.get("correct")) for r in sub), len(sub)),
            "correct_of_answered": share(sum(bool(r.get("correct")) for r in sub_ok), len(sub_ok)),
            "false_refusal_evidence_retrieved": share(sum(r["refused"] for r in sub_ev), len(sub_ev)),
            "unanswerable": len(sub_un),
            "refusal_unanswerable": share(sum(r["refused"] for r in sub_un), len(sub_un)),
            "citations_on_pdf_page": share(sum(c["on_pdf_page"] for c in sub_c), len(sub_c)),
        }
    out["by_pair"] = pairs
    return out


def write_summary(rows: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    summary = {**extra, **summarize(rows)}
    (OUT / f"{STEM}_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2))
    lines = ["# answers bench", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items() if k != "by_pair"]
    lines += ["", "| pair | " + " | ".join(next(iter(summary["by_pair"].values()), {})) + " |"]
    lines += [f"| {pair} | " + " | ".join(str(v) for v in m.values()) + " |" for pair, m in summary["by_pair"].items()]
    (OUT / f"{STEM}_summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=["bench", "unseen"], default="bench", help="question set (see above)")
    parser.add_argument(
        "--code", type=Path, default=REPO, help="checkout whose rag package answers (default: this one)"
    )
    parser.add_argument("--zh", type=int, default=30, help="answerable Chinese questions")
    parser.add_argument("--en", type=int, default=20, help="answerable English questions")
    parser.add_argument("--models-dir", type=Path, default=REPO / "indexes" / "_models")
    parser.add_argument("--home", type=Path, default=OUT / "answers_home")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores)")
    parser.add_argument("--top-k", type=int, default=None, help="sources per prompt (default: settings, 6)")
    parser.add_argument("--max-answer-tokens", type=int, default=None, help="default: settings, 384")
    parser.add_argument(
        "--context-budget",
        type=int,
        default=None,
        help="prompt tokens in all (default: settings, 600); 0 = whole chunks, the prompt before evidence windows",
    )
    parser.add_argument("--tag", default="", help="suffix for the output files, to keep configurations apart")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results in answers_bench.jsonl")
    parser.add_argument("--summarize", action="store_true", help="only rewrite the summary from answers_bench.jsonl")
    args = parser.parse_args()
    global STEM, KB, DOC_DIR
    base = "answers_bench" if args.set == "bench" else "answers_unseen"
    STEM = f"{base}_{args.tag}" if args.tag else base
    if args.set == "unseen":
        import subprocess

        KB, DOC_DIR = "answers_unseen", UNSEEN_DOCS
        subprocess.run(
            [sys.executable, str(UNSEEN / "fetch.py"), "--dest", str(UNSEEN_DOCS)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        questions = load_unseen()
    else:
        questions = load_questions(args.zh, args.en)
    names = sorted({q["doc"] for q in questions}) if args.set == "unseen" else ZH_DOCS + EN_DOCS
    if args.summarize:
        rows = [json.loads(line) for line in (OUT / f"{STEM}.jsonl").open(encoding="utf-8") if line.strip()]
        print(
            json.dumps(
                write_summary(rows, {"model": "qwen2.5-coder-1.5b", "rows": len(rows)}), ensure_ascii=False, indent=2
            )
        )
        return 0

    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.llm import make_generator
    from rag.llm.build_info import llama_build
    from rag.llm.models import prepare_qwen
    from rag.pipeline import QAPipeline
    from rag.records import Answer
    from rag.settings import apply_offline_defaults, load_settings

    apply_offline_defaults()
    OUT.mkdir(parents=True, exist_ok=True)
    model = prepare_qwen(args.models_dir)
    settings = load_settings(
        overrides={
            "paths.home": args.home,
            "llm.name": str(model),
            "llm.threads": args.threads,
            "retrieval.top_k": args.top_k,
            "llm.max_answer_tokens": args.max_answer_tokens,
            "llm.context_budget": args.context_budget,
        }
    )
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, KB, embedder, create=True)
    t = time.perf_counter()
    ingest_summary = ingest(settings, embedder, store, names)
    extra: dict[str, Any] = {
        "set": args.set,
        "code": str(CODE),
        "model": model.name,
        "embedder": embedder.id,
        "ingest": ingest_summary,
        "ingest_s": round(time.perf_counter() - t, 1),
        "settings": {
            "top_k": settings.retrieval.top_k,
            "min_score": settings.retrieval.min_score,
            "context_tokens": settings.llm.context_tokens,
            "max_answer_tokens": settings.llm.max_answer_tokens,
            "context_budget": settings.llm.context_budget,
        },
    }
    print("ingested", json.dumps(extra, ensure_ascii=False), flush=True)
    results = OUT / f"{STEM}.jsonl"
    generator = make_generator(settings)
    extra["llama_cpp"] = llama_build()
    extra["model_load_s"] = round(getattr(generator, "load_seconds", 0.0), 2)
    pipeline = QAPipeline(store, embedder, generator, settings)

    rows: list[dict[str, Any]] = []
    if results.exists() and not args.fresh:
        rows = [json.loads(line) for line in results.open(encoding="utf-8") if line.strip()]
    done = {r["id"] for r in rows}
    pdf_cache: dict[str, list[str]] = {}
    with results.open("a" if not args.fresh else "w", encoding="utf-8") as fh:
        for i, q in enumerate(questions, 1):
            if q["id"] in done:
                continue
            pieces: list[str] = []
            for item in pipeline.ask_stream(q["question"], events=True):
                if isinstance(item, str):
                    pieces.append(item)
                elif isinstance(item, Answer):
                    answer = item
            row = evaluate(q, answer, store, pdf_cache, getattr(answer, "draft", "") or "".join(pieces))
            row["streamed_is_answer"] = "".join(pieces) == answer.text
            rows.append(row)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            t = answer.timings
            print(
                f"[{i}/{len(questions)}] {q['kind'][:5]} {q.get('language')} refused={answer.refused} "
                f"cites={len(answer.citations)} ttft={t.get('first_token', 0):.1f}s total={t.get('total', 0):.1f}s "
                f"prompt={t.get('prompt_tokens', 0):.0f} | {answer.text[:100]!r}",
                flush=True,
            )
            write_summary(rows, extra)
    summary = write_summary(rows, extra)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
