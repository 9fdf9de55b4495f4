"""Retrieval (and optionally answer) evaluation over a questions file in the bench format.

One JSON object per line (../shared/bench/questions.jsonl): `question` (required), `doc` (file name
of the evidence document), `evidence_pages` (1-based, may be null), `language`, `source_dataset`,
`answerable` (default true), `answer` (reference), `id`.

Metrics (unanswerable questions are left out of the hit metrics and scored on refusal instead):
- doc-hit@k: a top-k hit comes from the question's document;
- page-hit@k: a top-k hit from that document spans an evidence page (questions with evidence pages);
- MRR@10: mean reciprocal rank of the first page hit within 10 (0 when none);
- latency p50/p95 of `retrieve` (embedding the query included), split by language and by source;
- with answers=True: the QA pipeline's citation validity (share of citations verified on their page;
  share pointing at an evidence page), refusal rate on unanswerable and answerable questions, token F1
  and correctness against the reference answer (rag.scoring), overall and by language pair
  ("<question language>-><document language>").

Only questions whose `doc` is in the knowledge base are scored (those without a doc are kept); the
others are counted in `skipped_not_in_kb`, so a partial KB does not read as failed retrieval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.errors import CiteqaError, InvalidRequest
from rag.lang import detect_language
from rag.scoring import correctness, token_f1  # noqa: F401  (token_f1: re-exported for callers)
from rag.settings import Settings

DocPage = tuple[str, int, int]  # (document file name, page_start, page_end)


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """Read a questions .jsonl file; InvalidRequest names the line of a malformed entry."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read questions file ({exc})") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(q, dict) or not str(q.get("question", "")).strip():
            raise InvalidRequest(f'{path}:{n}: each line needs a non-empty "question"')
        q.setdefault("id", f"q{n}")
        q["doc"] = Path(str(q["doc"])).name if q.get("doc") else ""
        q["evidence_pages"] = [int(p) for p in (q.get("evidence_pages") or [])]
        q["answerable"] = bool(q.get("answerable", True))
        q.setdefault("language", "")
        q.setdefault("source_dataset", "")
        out.append(q)
    return out


def _first_hit(q: dict[str, Any], ranked: Sequence[Sequence[Any]], *, page: bool) -> int:
    """1-based rank of the first hit on the question's doc (and evidence page when page=True); 0 if none."""
    pages = set(q["evidence_pages"])
    for rank, item in enumerate(ranked, start=1):
        doc, start = item[0], item[1]
        end = item[2] if len(item) > 2 else start
        if Path(doc).name != q["doc"]:
            continue
        if not page or any(p in pages for p in range(start, end + 1)):
            return rank
    return 0


def _aggregate(rows: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    scored = [r for r in rows if r["answerable"] and r["doc"]]
    paged = [r for r in scored if r["has_pages"]]
    out: dict[str, Any] = {"n": len(scored), "n_pages": len(paged)}
    for k in ks:
        out[f"doc_hit@{k}"] = sum(0 < r["doc_rank"] <= k for r in scored) / len(scored) if scored else 0.0
        out[f"page_hit@{k}"] = sum(0 < r["page_rank"] <= k for r in paged) / len(paged) if paged else 0.0
    out["mrr@10"] = sum(1.0 / r["page_rank"] for r in paged if 0 < r["page_rank"] <= 10) / len(paged) if paged else 0.0
    out["doc_mrr@10"] = (
        sum(1.0 / r["doc_rank"] for r in scored if 0 < r["doc_rank"] <= 10) / len(scored) if scored else 0.0
    )
    lat = sorted(r["latency_ms"] for r in rows if r.get("latency_ms") is not None)
    if lat:
        out["latency_ms_p50"] = _pct(lat, 50)
        out["latency_ms_p95"] = _pct(lat, 95)
    return out


def _pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[idx])


def score_rankings(
    questions: Sequence[dict[str, Any]],
    ranked: Sequence[Sequence[Sequence[Any]]],
    ks: Sequence[int] = (1, 3, 5, 10),
    latencies_ms: Sequence[float] | None = None,
    doc_languages: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Hit metrics for ranked (doc, page[, page_end]) lists, overall / by language / by source, and by
    question language -> document language when `doc_languages` (file name -> "en"/"zh") is given."""
    rows: list[dict[str, Any]] = []
    for i, (q, hits) in enumerate(zip(questions, ranked)):
        q_lang = q.get("language", "")
        d_lang = q.get("doc_language") or (doc_languages or {}).get(q["doc"], "")
        rows.append(
            {
                "id": q["id"],
                "language": q_lang,
                "lang_pair": f"{q_lang}->{d_lang}" if q_lang and d_lang else "",
                "source": q.get("source_dataset", ""),
                "answerable": q["answerable"],
                "doc": q["doc"],
                "has_pages": bool(q["evidence_pages"]),
                "doc_rank": _first_hit(q, hits, page=False),
                "page_rank": _first_hit(q, hits, page=True) if q["evidence_pages"] else 0,
                "latency_ms": latencies_ms[i] if latencies_ms is not None else None,
            }
        )

    def groups(key):
        return {v: _aggregate([r for r in rows if r[key] == v], ks) for v in sorted({r[key] for r in rows}) if v}

    return {
        "overall": _aggregate(rows, ks),
        "by_language": groups("language"),
        "by_source": groups("source"),
        "by_language_pair": groups("lang_pair"),
        "rows": rows,
    }


def run_eval(
    settings: Settings,
    kb_name: str,
    questions_path: str | Path,
    *,
    ks: Sequence[int] = (1, 3, 5, 10),
    answers: bool = False,
    generator: Any | None = None,
) -> dict[str, Any]:
    """Evaluate retrieval on knowledge base `kb_name` (and the full QA pipeline with answers=True).

    `generator` (optional) reuses an already loaded LLM for answers=True instead of loading settings.llm.
    """
    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.retrieval import make_retriever

    ks = sorted({int(k) for k in ks if int(k) > 0}) or [1, 3, 5, 10]
    questions = load_questions(questions_path)
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, kb_name, embedder)
    try:
        in_kb = _kb_doc_names(store)
        skipped = sorted({q["doc"] for q in questions if q["doc"] and q["doc"] not in in_kb})
        n_all = len(questions)
        questions = [q for q in questions if not q["doc"] or q["doc"] in in_kb]
        from rag.llm import make_generator

        llm: list[Any] = [generator]  # loaded once, on first use (query translation or answers)

        def load_llm() -> Any:
            if llm[0] is None:
                llm[0] = make_generator(settings)
            return llm[0]

        retriever = make_retriever(store, embedder, settings.retrieval, generator=load_llm)
        depth = max(max(ks), 10)
        ranked: list[list[DocPage]] = []
        latencies: list[float] = []
        no_evidence: list[bool] = []
        best: list[float] = []
        for q in questions:
            t = time.perf_counter()
            result = retriever.retrieve(q["question"], depth)
            latencies.append((time.perf_counter() - t) * 1000)
            ranked.append([(h.chunk.doc, h.chunk.page_start, h.chunk.page_end) for h in result.hits])
            no_evidence.append(result.no_evidence)
            best.append(result.best_score)
        scored = score_rankings(questions, ranked, ks, latencies, document_languages(store))
        rows = scored.pop("rows")
        for row, ne, b in zip(rows, no_evidence, best):
            row["no_evidence"] = ne
            row["best_score"] = round(b, 4)
        lat = sorted(latencies)
        unanswerable = [r for r in rows if not r["answerable"]]
        answerable = [r for r in rows if r["answerable"]]
        report: dict[str, Any] = {
            "kb": kb_name,
            "questions": len(questions),
            "skipped_not_in_kb": n_all - len(questions),
            "skipped_docs": skipped[:10],
            "ks": ks,
            "mode": settings.retrieval.mode,
            "embedder": embedder.id,
            **scored,
            "latency_ms": {
                "p50": _pct(lat, 50),
                "p95": _pct(lat, 95),
                "mean": sum(lat) / len(lat) if lat else 0.0,
            },
            "no_evidence": {
                "min_score": settings.retrieval.min_score,
                "answerable_rate": sum(r["no_evidence"] for r in answerable) / len(answerable) if answerable else 0.0,
                "unanswerable_rate": sum(r["no_evidence"] for r in unanswerable) / len(unanswerable)
                if unanswerable
                else 0.0,
            },
            "per_question": rows,
        }
        if answers:
            report["answers"] = _eval_answers(settings, store, embedder, retriever, questions, rows, load_llm())
        return report
    finally:
        store.close()


def document_languages(store: Any) -> dict[str, str]:
    """File name -> the language of the document's first page with text ("en" / "zh")."""
    out: dict[str, str] = {}
    for d in store.list_documents():
        lang = "?"
        for page in range(1, min(d.pages, 3) + 1):
            try:
                text = store.page_text(d.id, page)
            except CiteqaError:
                break
            if text.strip():
                lang = detect_language(text)
                break
        for path in [d.source, *d.paths]:
            out[Path(path).name] = lang
    return out


def _kb_doc_names(store: Any) -> set[str]:
    """File names of the knowledge base's documents (every path a document was added under)."""
    names: set[str] = set()
    for d in store.list_documents():
        names.add(Path(d.source).name)
        names.update(Path(p).name for p in d.paths)
    return names


def _doc_language(q: dict[str, Any], out: dict[str, Any]) -> str:
    """The question's `doc_language`, else detected on the first retrieved/cited text of its doc."""
    if q.get("doc_language"):
        return str(q["doc_language"])
    texts = [(s.get("doc"), s.get("text")) for s in out.get("sources", [])]
    texts += [(c.get("doc"), c.get("quote")) for c in out.get("citations", [])]
    for doc, text in texts:
        # Another document's text says nothing about this one's language.
        if text and (not q["doc"] or Path(str(doc or "")).name == q["doc"]):
            return detect_language(str(text))
    return "?"


def _share(hits: int, n: int) -> float:
    return hits / n if n else 0.0


def _correctness_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """correct_share (answerable with a reference), correct_of_answered, citation_on_gold_page."""
    graded = [r for r in rows if r["answerable"] and r.get("correct") is not None]
    cited = [r for r in graded if not r["refused"] and r["verified_citations"] > 0]
    answered = [r for r in rows if r["answerable"] and r["doc"] and not r["refused"]]
    return {
        "n": len([r for r in rows if r["answerable"]]),
        "graded": len(graded),
        "correct_share": _share(sum(r["correct"] for r in graded), len(graded)),
        "correct_of_answered": _share(sum(r["correct"] for r in cited), len(cited)),
        "citation_on_gold_page": _share(sum(r["on_gold_page"] for r in answered), len(answered)),
    }


def _eval_answers(
    settings: Settings,
    store: Any,
    embedder: Any,
    retriever: Any,
    questions: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    generator: Any | None,
) -> dict[str, Any]:
    from rag.llm import make_generator
    from rag.pipeline import (  # the answering stage (imported lazily)
        QAPipeline,
        answer_to_dict,
    )

    pipeline = QAPipeline(
        store,
        embedder,
        generator or make_generator(settings),
        settings,
        retriever=retriever,
    )
    cites = verified = on_evidence = 0
    refused_unanswerable = refused_answerable = n_unanswerable = n_answerable = 0
    f1s: list[float] = []
    seconds: list[float] = []
    for q, row in zip(questions, rows):
        t = time.perf_counter()
        out = answer_to_dict(pipeline.ask(q["question"]))
        seconds.append(time.perf_counter() - t)
        pages = set(q["evidence_pages"])
        refused = bool(out.get("refused"))
        on_gold = verified_here = 0
        for c in out.get("citations", []):
            # Without evidence pages any page of the question's document counts.
            on_page = Path(str(c.get("doc", ""))).name == q["doc"] and (not pages or c.get("page") in pages)
            cites += 1
            verified_here += bool(c.get("verified"))
            on_evidence += on_page
            on_gold += on_page and bool(c.get("verified"))
        verified += verified_here
        answer = str(out.get("answer", ""))
        score: dict[str, Any] = {"correct": None, "f1": None, "numbers_match": None}
        if q["answerable"]:
            n_answerable += 1
            refused_answerable += refused
            if q.get("answer"):
                score = correctness(answer, str(q["answer"]), refused=refused)
                if not refused:
                    f1s.append(score["f1"])
        else:
            n_unanswerable += 1
            refused_unanswerable += refused
        q_lang = q.get("language") or detect_language(q["question"])
        row.update(
            answer=answer,
            refused=refused,
            citations=len(out.get("citations", [])),
            verified_citations=verified_here,
            on_gold_page=on_gold > 0,
            lang_pair=f"{q_lang}->{_doc_language(q, out)}",
            **score,
        )
    secs = sorted(seconds)
    pairs = sorted({r["lang_pair"] for r in rows})
    return {
        **{k: v for k, v in _correctness_metrics(rows).items() if k != "n"},
        "by_language_pair": {p: _correctness_metrics([r for r in rows if r["lang_pair"] == p]) for p in pairs},
        "citations": cites,
        "citation_valid_rate": verified / cites if cites else 0.0,
        "citation_on_evidence_rate": on_evidence / cites if cites else 0.0,
        "refusal_rate_unanswerable": refused_unanswerable / n_unanswerable if n_unanswerable else 0.0,
        "refusal_rate_answerable": refused_answerable / n_answerable if n_answerable else 0.0,
        "unanswerable": n_unanswerable,
        "token_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "seconds_p50": _pct(secs, 50),
        "seconds_p95": _pct(secs, 95),
    }
