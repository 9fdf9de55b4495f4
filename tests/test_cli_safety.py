"""The CLI in-process with the fake embedder: a batch with a missing path, printing names made by
others (escape codes), and `kb remove` asking before it deletes (issue 17, item 6)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rag.cli import main
from rag.kb import kb_exists
from rag.settings import load_settings

FAKE = ["--embedder", "fake"]
EVIL = "\x1b]0;owned\x07\x1b[2Jreport\x9b31m.txt"  # retitles the window, clears the screen, C1 CSI


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str], kb: str = "k") -> None:
    doc = tmp_path / "docs" / "a.txt"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text("Alpha notes about apples and their revenue.", encoding="utf-8")
    assert main(["ingest", str(doc), "--kb", kb, "--workers", "1", *FAKE]) == 0
    capsys.readouterr()


def test_missing_path_fails_alone_and_the_batch_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Revenue grew in 2023.", encoding="utf-8")
    missing = tmp_path / "gone.pdf"
    code = main(["ingest", str(missing), str(good), "--kb", "b", "--workers", "1", "--json", *FAKE])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["added"] == 1
    [failure] = out["failed"]
    assert failure["path"] == str(missing) and "no such file or folder" in failure["error"]
    assert "\n" not in failure["error"]
    assert any("gone.pdf" in line and "no such file" in line for line in captured.err.splitlines())
    # --strict still reports the failure in the exit code
    assert main(["ingest", str(missing), str(good), "--kb", "b", "--workers", "1", "--strict", *FAKE]) == 3
    # nothing at all exists: one line, and no knowledge base is made for it
    capsys.readouterr()
    assert main(["ingest", str(missing), "--kb", "none", *FAKE]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]
    assert not kb_exists(load_settings(), "none")


def test_docs_list_escapes_control_characters_but_json_stays_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / EVIL
    doc.write_text("Quarterly notes.", encoding="utf-8")
    assert main(["ingest", str(doc), "--kb", "e", "--workers", "1", *FAKE]) == 0
    progress = capsys.readouterr().err
    assert "\x1b" not in progress and "\x07" not in progress and "\x9b" not in progress
    assert "\\x1b]0;owned\\x07" in progress

    assert main(["docs", "list", "--kb", "e"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\\x1b[2Jreport\\x9b31m" in text  # visible, and still recognisable

    assert main(["docs", "list", "--kb", "e", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["source"] == str(doc.resolve())  # exact: a script can open it


def test_kb_remove_refuses_without_a_terminal_or_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ingest(tmp_path, capsys)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input is not a confirmation
    assert main(["kb", "remove", "k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--yes" in err[0] and "not a terminal" in err[0]
    assert kb_exists(load_settings(), "k")
    assert main(["kb", "remove", "k", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": "k"}
    assert not kb_exists(load_settings(), "k")


@pytest.mark.parametrize(
    ("answer", "removed"), [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False), ("", False)]
)
def test_kb_remove_asks_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, answer: str, removed: bool
) -> None:
    _ingest(tmp_path, capsys)
    monkeypatch.setattr("sys.stdin", _Tty(answer))
    assert main(["kb", "remove", "k"]) == (0 if removed else 1)
    captured = capsys.readouterr()
    assert "[y/N]" in captured.err
    assert kb_exists(load_settings(), "k") is not removed
    if removed:
        assert captured.out.strip() == "removed knowledge base k"


def test_kb_remove_of_a_missing_kb_says_so_without_asking(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", _Tty("y\n"))
    assert main(["kb", "remove", "nope"]) == 1
    err = capsys.readouterr().err
    assert "[y/N]" not in err and "does not exist" in err
