"""The markdown report of a `rag.eval.run_eval` result (`citeqa eval` without --json)."""

from __future__ import annotations

from typing import Any


def eval_markdown(result: dict[str, Any]) -> str:
    """A markdown report of a run_eval result."""
    ks = result.get("ks", [1, 3, 5, 10])
    head = ["group", "n"] + [f"doc@{k}" for k in ks] + [f"page@{k}" for k in ks] + ["MRR@10", "p50 ms", "p95 ms"]
    lines = [
        f"# Retrieval evaluation — knowledge base `{result.get('kb')}`",
        "",
        (
            f"{result.get('questions')} questions, mode `{result.get('mode')}`, embedder `{result.get('embedder')}`; "
            f"latency p50 {result['latency_ms']['p50']:.1f} ms, p95 {result['latency_ms']['p95']:.1f} ms."
        ),
    ]
    if result.get("skipped_not_in_kb"):
        docs = ", ".join(f"`{d}`" for d in result.get("skipped_docs", []))
        more = ", …" if result["skipped_not_in_kb"] > len(result.get("skipped_docs", [])) else ""
        lines += [
            "",
            f"Skipped {result['skipped_not_in_kb']} questions whose document is not in the knowledge base ({docs}{more}).",
        ]
    lines += [
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]

    def row(name: str, m: dict[str, Any]) -> str:
        cells = (
            [name, str(m["n"])] + [f"{m[f'doc_hit@{k}']:.3f}" for k in ks] + [f"{m[f'page_hit@{k}']:.3f}" for k in ks]
        )
        cells += [
            f"{m['mrr@10']:.3f}",
            f"{m.get('latency_ms_p50', 0.0):.1f}",
            f"{m.get('latency_ms_p95', 0.0):.1f}",
        ]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("**all**", result["overall"]))
    for lang, m in result.get("by_language", {}).items():
        lines.append(row(f"lang: {lang}", m))
    for src, m in result.get("by_source", {}).items():
        lines.append(row(f"source: {src}", m))
    for pair, m in result.get("by_language_pair", {}).items():
        lines.append(row(f"question -> document: {pair}", m))
    ne = result.get("no_evidence", {})
    lines += [
        "",
        (
            f"No-evidence (floor {ne.get('min_score')}): {ne.get('answerable_rate', 0):.1%} of answerable questions, "
            f"{ne.get('unanswerable_rate', 0):.1%} of unanswerable ones."
        ),
    ]
    ans = result.get("answers")
    if ans:
        lines += [
            "",
            "## Answers",
            "",
            "| citations | valid | on evidence page | refused (unanswerable) | refused (answerable) | token F1 | p50 s |",
            "|---|---|---|---|---|---|---|",
            (
                f"| {ans['citations']} | {ans['citation_valid_rate']:.1%} | {ans['citation_on_evidence_rate']:.1%} | "
                f"{ans['refusal_rate_unanswerable']:.1%} | {ans['refusal_rate_answerable']:.1%} | {ans['token_f1']:.3f} | "
                f"{ans['seconds_p50']:.1f} |"
            ),
            "",
            "Correct: share of graded answerable questions (refusals count as wrong); of answered: among those "
            "answered with a verified citation; gold page: answered questions citing an evidence page of their document.",
            "",
            "| group | n | graded | correct | correct of answered | citation on gold page |",
            "|---|---|---|---|---|---|",
        ]

        def arow(name: str, m: dict[str, Any]) -> str:
            return (
                f"| {name} | {m['n']} | {m['graded']} | {m['correct_share']:.1%} | "
                f"{m['correct_of_answered']:.1%} | {m['citation_on_gold_page']:.1%} |"
            )

        n_all = sum(m["n"] for m in ans.get("by_language_pair", {}).values())
        lines.append(arow("**all**", {**ans, "n": n_all}))
        for pair, m in ans.get("by_language_pair", {}).items():
            if m["n"]:
                lines.append(arow(f"lang: {pair}", m))
    return "\n".join(lines) + "\n"
