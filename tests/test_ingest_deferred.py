"""Searchable at once (issue 16 item 1): documents are written before their vectors, which follow from
the store's embedding queue; `--no-wait`, `citeqa kb embed`, progress, job share, /metrics, the floor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pdfgen import make_pdf

from ingest.pipeline import IngestProgress, embed_pending, ingest_paths
from ingest.progress import progress_line
from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.retrieval import make_retriever
from rag.settings import Settings, load_settings
from server.jobprogress import STORED_SHARE, share_done

REPO = Path(__file__).resolve().parents[1]

PAGES = {
    "atlas.pdf": [
        "Atlas Freight annual report.\n\nAtlas Freight moved 4.2 million containers through Rotterdam in 2023.",
        "Outlook.\n\nThe board expects container volumes to stabilise next year.",
    ],
    "星河.pdf": ["星河电子年度报告。\n\n2023年公司营业收入为18.6亿元，同比增长12%。"],
}


def _docs(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, pages in PAGES.items():
        make_pdf(folder / name, pages)
    return folder


def test_no_wait_leaves_every_document_keyword_searchable_and_the_queue_in_the_store(
    fake_settings: Settings, tmp_path: Path
) -> None:
    fake = make_embedder(fake_settings.embedder)
    store = open_kb(fake_settings, "kb", fake, create=True)
    try:
        summary = ingest_paths([_docs(tmp_path / "docs")], store, fake, fake_settings, workers=1, wait=False)
        assert len(summary.added) == 2 and summary.embedded == 0
        assert summary.pending == summary.chunks > 0
        assert store.embedding_counts() == (0, summary.chunks)
        assert store.keyword_search("Rotterdam containers", 3)[0].chunk.doc.startswith("atlas")
        assert store.dense_search(fake.embed_query("Rotterdam containers"), 3) == []
        # A question whose evidence waits for its vector is not refused at the floor meanwhile.
        strict = fake_settings.retrieval.model_copy(update={"min_score": 0.99, "min_keyword_coverage": 1.0})
        found = make_retriever(store, fake, strict).retrieve("How many containers went through Rotterdam?", 3)
        assert not found.no_evidence and found.unembedded == summary.chunks
        assert found.hits[0].chunk.doc.startswith("atlas")
    finally:
        store.close()

    # The queue survived closing the KB; embedding it is its own command, with progress.
    store = open_kb(fake_settings, "kb", fake)
    seen: list[IngestProgress] = []
    try:
        done = embed_pending(store, fake, fake_settings, on_progress=seen.append)
        assert done.pending == 0 and done.embedded == summary.pending
        assert store.embedding_counts() == (summary.chunks, summary.chunks)
        assert store.dense_search(fake.embed_query("Rotterdam containers"), 1)
        phases = [p for p in seen if p.phase == "embedding"]
        assert phases and phases[-1].embedded == phases[-1].chunks_total == summary.chunks
        # Embedded, the same strict floor refuses the question again: the waiver lasted only while needed.
        strict = fake_settings.retrieval.model_copy(update={"min_score": 0.99, "min_keyword_coverage": 1.0})
        assert (
            make_retriever(store, fake, strict).retrieve("How many containers went through Rotterdam?", 3).no_evidence
        )
    finally:
        store.close()


def test_default_ingest_waits_and_reports_both_phases(fake_settings: Settings, tmp_path: Path) -> None:
    fake = make_embedder(fake_settings.embedder)
    store = open_kb(fake_settings, "kb", fake, create=True)
    seen: list[IngestProgress] = []
    try:
        summary = ingest_paths(
            [_docs(tmp_path / "docs")], store, fake, fake_settings, workers=1, on_progress=seen.append
        )
        assert summary.pending == 0 and summary.embedded == summary.chunks
        assert 0 < summary.stored_s <= summary.seconds
        phases = [p.phase for p in seen]
        assert phases.index("embedding") > phases.index("ingesting")
        assert all(p.embedding_follows for p in seen if p.phase == "ingesting")
        last = [p for p in seen if p.phase == "embedding"][-1]
        assert "embedded" in progress_line(last) and f"of {summary.chunks}" in progress_line(last)
        # An unchanged rerun has nothing to parse or embed.
        again = ingest_paths([tmp_path / "docs"], store, fake, fake_settings, workers=1)
        assert len(again.skipped) == 2 and again.embedded == 0 and again.pending == 0
    finally:
        store.close()


def test_job_share_counts_the_embedding_phase_and_never_reaches_one_early() -> None:
    writing = {"phase": "ingesting", "files_done": 2, "files_total": 2, "embedding_follows": True}
    assert share_done(writing) == STORED_SHARE
    halfway = {"phase": "embedding", "chunks": 50, "chunks_per_s": 10.0, "eta_s": 5.0}
    assert share_done(halfway) == STORED_SHARE + (1 - STORED_SHARE) * 0.5
    immediate = {"phase": "ingesting", "files_done": 2, "files_total": 2}  # a store that embeds first
    assert share_done(immediate) == 1.0


def test_cancel_during_embedding_keeps_the_rest_queued(fake_settings: Settings, tmp_path: Path) -> None:
    fake = make_embedder(fake_settings.embedder)
    settings = fake_settings.model_copy(deep=True)
    settings.embedder.batch_size = 1
    store = open_kb(settings, "kb", fake, create=True)
    cancel = threading.Event()

    def stop_after_first_batch(p: IngestProgress) -> None:
        if p.phase == "embedding" and p.embedded >= 1:
            cancel.set()

    try:
        summary = ingest_paths([_docs(tmp_path / "docs")], store, fake, settings, workers=1,
                               on_progress=stop_after_first_batch, cancel=cancel)  # fmt: skip
        assert summary.cancelled and 0 < summary.pending < summary.chunks
        embedded, chunks = store.embedding_counts()
        assert embedded + summary.pending == chunks
    finally:
        store.close()


def _citeqa(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CITEQA_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _stats(home: Path) -> dict[str, int]:
    out = _citeqa(home, "kb", "stats", "kb", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cli_no_wait_returns_searchable_and_embeds_in_the_background(tmp_path: Path) -> None:
    """The real command with the bundled embedder: `--no-wait` returns once every file is stored, a
    detached `citeqa kb embed` fills in the vectors, and `kb stats` shows embedded x of y."""
    home = tmp_path / "home"
    out = _citeqa(home, "ingest", str(_docs(tmp_path / "docs")), "--kb", "kb", "--no-wait", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == 2 and summary["pending"] > 0
    assert "embedding in the background" in out.stderr
    search = _citeqa(home, "search", "Rotterdam containers", "--kb", "kb", "--json")
    assert search.returncode == 0 and "Rotterdam" in search.stdout
    deadline = time.monotonic() + 120
    while (stats := _stats(home))["embedded"] < stats["chunks"] and time.monotonic() < deadline:
        time.sleep(1)
    assert stats["embedded"] == stats["chunks"] == summary["chunks"] and stats["pending"] == 0
    logs = list((home / ".locks").glob("embed-*.log"))
    assert logs and "embedded" in logs[0].read_text()
    human = _citeqa(home, "kb", "stats", "kb")
    assert f"{stats['chunks']} of {stats['chunks']} chunks" in human.stdout


RUNNER = r"""
import sys
sys.path[:0] = [sys.argv[3]]
from pathlib import Path
from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.settings import load_settings
from ingest.pipeline import ingest_paths

settings = load_settings(overrides={"paths.home": sys.argv[1], "embedder.batch_size": 2})
embedder = make_embedder(settings.embedder)
store = open_kb(settings, "kb", embedder, create=True)

def on_progress(p):
    if p.phase == "embedding":
        print("EMBEDDING", p.embedded, p.chunks_total, flush=True)

summary = ingest_paths([Path(sys.argv[2])], store, embedder, settings, workers=1, on_progress=on_progress)
store.close()
print("DONE", summary.pending, flush=True)
"""


def test_sigkill_during_embedding_then_rerun_resumes_the_queue(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):  # enough chunks that the embedding phase lasts a few batches of 2
        make_pdf(
            docs / f"r{i}.pdf",
            [f"Report {i}.\n\n" + " ".join(f"Sentence {j} of report {i} about freight volumes." for j in range(40))]
            * 3,
        )
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(home), str(docs), str(REPO)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    embedded = -1
    for line in proc.stdout:
        if line.startswith("EMBEDDING") and int(line.split()[1]) > 0:
            embedded = int(line.split()[1])
            break
    assert embedded > 0, "the embedding phase never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    settings = load_settings(overrides={"paths.home": home})
    store = open_kb(settings, "kb")
    try:
        done, chunks = store.embedding_counts()
        assert len(store.list_documents()) == 4  # every document was stored before embedding began
        assert 0 < done < chunks, (done, chunks)
        assert len(store.keyword_search("freight volumes", 50)) > 0
    finally:
        store.close()
    rerun = subprocess.run([sys.executable, "-c", RUNNER, str(home), str(docs), str(REPO)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0 and "DONE 0" in rerun.stdout, rerun.stderr[-2000:]
    store = open_kb(settings, "kb")
    try:
        assert store.embedding_counts() == (chunks, chunks)
    finally:
        store.close()
