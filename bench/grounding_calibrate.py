"""Calibrate the grounding bars (rag/settings/retrieval.py GroundingSettings, RetrievalSettings.min_keyword_coverage)
on the bench DEV questions only — the answers-bench sample of ../shared/bench — never on the frozen
set in bench/unseen, which is reported separately.

No LLM: for each dev question it retrieves, builds the prompt's evidence units and measures
  - the relevance floor's two signals: best dense cosine and the best keyword hit's coverage of the
    question, for answerable and unanswerable questions;
  - claim support: embedding similarity between the reference answer (the claim a right answer
    makes) and the units on a gold page that hold it (positives) or units off the gold pages
    (negatives); the semantic bar is the lowest value that passes at most 5% of negatives;
  - question relevance: similarity between the question and those same units (the short-answer
    bar), and the best unit of each question (the bar for showing passages with a refusal: at most
    10% of unanswerable questions may show any).
Prints the distributions and the chosen values; writes bench/out/grounding_calibrate.json.
Run: .venv/bin/python bench/grounding_calibrate.py --home /work/bench_home
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.answers_bench import EN_DOCS, KB, OUT, ZH_DOCS, load_questions  # noqa: E402

NEGATIVE_PASS = 0.05  # share of off-gold units one bar may pass
# ...and both semantic signals together: the semantic check runs only after the lexical one failed
# and the claim's numbers and names were found in the unit, so a pair-level rate overstates it
NEGATIVE_PASS_EITHER = 0.10
# never below: at 0 the most similar unit of every prompt would back any claim, however unrelated
# (chosen by hand on tests/test_grounding.py's cross-language example, not on a reported question)
MIN_MARGIN = 0.03
UNANSWERABLE_PASSAGES = 0.05  # per signal (lexical, semantic): share of unanswerable questions shown passages


def bar_at(negatives: list[float], allowed: float) -> float:
    """The lowest value that at most `allowed` of `negatives` reach."""
    if not negatives:
        return 1.0
    ranked = sorted(negatives, reverse=True)
    k = int(allowed * len(ranked))
    return round(ranked[k] + 1e-4, 4) if k < len(ranked) else round(ranked[-1], 4)


def share_at_least(values: list[float], bar: float) -> float | None:
    return round(sum(v >= bar for v in values) / len(values), 3) if values else None


def describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    return {
        "n": len(v),
        "min": round(v[0], 3),
        "p10": round(v[len(v) // 10], 3),
        "median": round(statistics.median(v), 3),
        "max": round(v[-1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="citeqa home holding the answers_bench knowledge base")
    args = parser.parse_args()

    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.prompting import build_prompt
    from rag.retrieval import make_retriever
    from rag.settings import apply_offline_defaults, load_settings
    from rag.support import SupportChecker
    from rag.text.features import features, plain

    apply_offline_defaults()
    settings = load_settings(overrides={"paths.home": args.home})
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, KB, embedder)
    retriever = make_retriever(store, embedder, settings.retrieval)
    questions = [q for q in load_questions(10_000, 10_000) if q["doc"] in ZH_DOCS + EN_DOCS]

    dense = {"answerable": [], "unanswerable": []}  # type: dict[str, list[float]]
    coverage = {"answerable": [], "unanswerable": []}  # type: dict[str, list[float]]
    pos, neg, q_pos, q_neg = [], [], [], []  # type: list[float], list[float], list[float], list[float]
    m_pos, m_neg = [], []  # type: list[float], list[float]  # margin over the median of the other units, when the most similar
    best_unit_sim = {"answerable": [], "unanswerable": []}  # type: dict[str, list[float]]
    best_unit_cov = {"answerable": [], "unanswerable": []}  # type: dict[str, list[float]]
    for q in questions:
        kind = q["kind"]
        r = retriever.retrieve(q["question"], settings.retrieval.top_k)
        dense[kind].append(r.best_score)
        coverage[kind].append(r.keyword_coverage)
        if not r.hits:
            continue
        prompt = build_prompt(
            q["question"],
            r.hits,
            embedder.count_tokens,
            context_tokens=settings.llm.context_tokens,
            max_answer_tokens=settings.llm.max_answer_tokens,
            context_budget=settings.llm.context_budget,
            page_text=store.page_text,
        )
        units = [u for u in prompt.units if u.n > 0]
        if not units:
            continue
        checker = SupportChecker(q["question"], units, embedder)
        rel = [checker.relevance(u) for u in units]
        best_unit_cov[kind].append(max(c for c, _ in rel))
        best_unit_sim[kind].append(max(s or 0.0 for _, s in rel))
        if kind != "answerable":
            continue
        gold_pages = set(q.get("evidence_pages") or [])
        answer = str(q.get("answer", ""))
        needle, numbers = plain(answer), features(answer).numbers
        sims = [checker.similarity(answer, u) or 0.0 for u in units]
        for i, (u, (_, qsim)) in enumerate(zip(units, rel)):
            on_gold = u.doc == q["doc"] and u.page in gold_pages
            holds = (bool(needle) and len(needle) <= 40 and needle in plain(u.text)) or (
                bool(numbers) and numbers <= features(u.context).numbers
            )
            sim = sims[i]
            others = sorted(sims[:i] + sims[i + 1 :])
            margin = sim - others[len(others) // 2] if len(others) >= 2 and sim >= others[-1] else -1.0
            if on_gold and holds:
                pos.append(sim)
                q_pos.append(qsim or 0.0)
                m_pos.append(margin)
            elif not on_gold:
                neg.append(sim)
                q_neg.append(qsim or 0.0)
                m_neg.append(margin)

    semantic = bar_at(neg, NEGATIVE_PASS)
    # the margin bar: the lowest that keeps negatives passing either signal within NEGATIVE_PASS_EITHER
    margin = next(
        (
            round(d, 4)
            for d in sorted({MIN_MARGIN, *(m + 1e-4 for m in m_neg if m >= MIN_MARGIN)})
            if sum(a >= semantic or b >= d for a, b in zip(neg, m_neg)) <= NEGATIVE_PASS_EITHER * len(neg)
        ),
        1.0,
    )
    question_semantic = bar_at(q_neg, NEGATIVE_PASS)
    passage_semantic = bar_at(best_unit_sim["unanswerable"], UNANSWERABLE_PASSAGES)
    passage_lexical = bar_at(best_unit_cov["unanswerable"], UNANSWERABLE_PASSAGES)
    min_keyword_coverage = bar_at(coverage["unanswerable"], UNANSWERABLE_PASSAGES)
    result: dict[str, Any] = {
        "questions": {k: len(v) for k, v in dense.items()},
        "floor": {
            "dense_best": {k: describe(v) for k, v in dense.items()},
            "keyword_coverage": {k: describe(v) for k, v in coverage.items()},
            "min_keyword_coverage": min_keyword_coverage,
            "answerable_refused_old_floor": share_at_least(
                [-d for d in dense["answerable"]], -settings.retrieval.min_score + 1e-9
            ),
            "answerable_refused_new_floor": round(
                sum(
                    d < settings.retrieval.min_score and c < min_keyword_coverage
                    for d, c in zip(dense["answerable"], coverage["answerable"])
                )
                / max(1, len(dense["answerable"])),
                3,
            ),
            "unanswerable_refused_new_floor": round(
                sum(
                    d < settings.retrieval.min_score and c < min_keyword_coverage
                    for d, c in zip(dense["unanswerable"], coverage["unanswerable"])
                )
                / max(1, len(dense["unanswerable"])),
                3,
            ),
        },
        "claim_support": {
            "positives": describe(pos),
            "negatives": describe(neg),
            "semantic": semantic,
            "positives_passing": share_at_least(pos, semantic),
            "margin": margin,
            "margin_positives": describe(m_pos),
            "margin_negatives": describe(m_neg),
            "positives_passing_margin": share_at_least(m_pos, margin),
            "positives_passing_either": share_at_least(
                [max(a >= semantic, b >= margin) for a, b in zip(pos, m_pos)], 1
            ),
            "negatives_passing_either": share_at_least(
                [max(a >= semantic, b >= margin) for a, b in zip(neg, m_neg)], 1
            ),
        },
        "question_relevance": {
            "positives": describe(q_pos),
            "negatives": describe(q_neg),
            "question_semantic": question_semantic,
            "positives_passing": share_at_least(q_pos, question_semantic),
        },
        "passages": {
            "best_unit_similarity": {k: describe(v) for k, v in best_unit_sim.items()},
            "best_unit_coverage": {k: describe(v) for k, v in best_unit_cov.items()},
            "passage_semantic": passage_semantic,
            "passage_lexical": passage_lexical,
            "answerable_shown": share_at_least(
                [
                    max(s >= passage_semantic, c >= passage_lexical)
                    for s, c in zip(best_unit_sim["answerable"], best_unit_cov["answerable"])
                ],
                1,
            ),
            "unanswerable_shown": share_at_least(
                [
                    max(s >= passage_semantic, c >= passage_lexical)
                    for s, c in zip(best_unit_sim["unanswerable"], best_unit_cov["unanswerable"])
                ],
                1,
            ),
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "grounding_calibrate.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
