"""Parallel writers on one pgvector KB: two ingest processes (as on two machines) over overlapping folders.

Both run the real ingest pipeline (`ingest_paths`, what `citeqa ingest` runs) and plan against the
same empty KB, so both see every file as new; then their writes land one after the other, the worst
interleaving of a real race. The KB must end as a single clean run over the union leaves it: every
document exactly once, with all its paths, and the same chunk count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import test_store_contract
from scale_servers import have_pgserver

from rag.settings import Settings
from rag.store import STORES

REPO = Path(__file__).resolve().parents[1]

pg_url = test_store_contract.pg_url  # the session's PostgreSQL, shared with the contract suite

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(not have_pgserver(), reason="needs pgserver + psycopg"),
]

# Each writer plans (classify: every file new on the empty KB), says "planned", then waits for its release
# file before parsing and writing: the test orders the writes of two runs that planned at the same time.
_INGESTER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {tests!r}]
    import conftest
    conftest.EMBEDDERS.register("fake", conftest.make_fake_embedder)  # the session fixture is not here
    from ingest.pipeline import ingest_paths
    from rag.kb import open_kb
    from rag.settings import Settings
    if __name__ == "__main__":  # the parser pool's worker processes import this module again
        settings = Settings.model_validate(json.loads(Path(sys.argv[1]).read_text()))
        release = Path(sys.argv[3])
        emb = conftest.FakeEmbedder()
        store = open_kb(settings, sys.argv[2], emb)
        held = []
        def hold(p):
            if p.phase == "ingesting" and not held:
                held.append(True)
                print("planned", flush=True)
                while not release.exists():
                    time.sleep(0.01)
        summary = ingest_paths([Path(p) for p in sys.argv[4:]], store, emb, settings, workers=1, on_progress=hold)
        store.close()
        print(json.dumps({{"failed": summary.failed, "added": len(summary.added), "held": bool(held)}}), flush=True)
    """
)


def _corpus(root: Path) -> tuple[Path, Path]:
    """Two overlapping trees: `root/right` is inside what the second writer ingests (`root`).

    Some files in `right` are byte-identical copies of files in `root/left` (one document, two paths),
    so the first writer stores a document under a path the second never names, and the other way round.
    """
    left, right = root / "left", root / "right"
    left.mkdir(parents=True)
    right.mkdir()
    for i in range(12):
        text = f"Report {i}\n\nRevenue of unit {i} rose {i + 3} percent.\n\nRisks of unit {i}: supply and currency."
        (left / f"doc{i}.md").write_text(text, encoding="utf-8")
        if i % 3 == 0:
            (right / f"copy-of-doc{i}.md").write_text(text, encoding="utf-8")
    for i in range(6):
        (right / f"extra{i}.txt").write_text(f"第{i}节 营业收入\n\n本节说明第{i}项业务的收入与成本。", encoding="utf-8")
    (left / "dup-a.md").write_text("Same words in two files.\n\nSecond paragraph.", encoding="utf-8")
    (left / "dup-b.md").write_text("Same words in two files.\n\nSecond paragraph.", encoding="utf-8")
    return right, root


def _state(settings: Settings, kb: str) -> tuple[list[tuple[str, list[str]]], int, int]:
    """(document id -> sorted paths, chunk count from stats, chunk count from the documents)."""
    store = STORES.create("pgvector").open(settings, kb, embedder_id=None, dim=None, create=False)
    try:
        docs = store.list_documents()
        return sorted((d.id, sorted(d.paths)) for d in docs), int(store.stats()["chunks"]), sum(d.chunks for d in docs)
    finally:
        store.close()


def test_two_ingest_processes_over_overlapping_folders(fake_settings: Settings, pg_url: str, tmp_path: Path) -> None:
    from conftest import FakeEmbedder

    from ingest.pipeline import ingest_paths
    from rag.kb import open_kb

    settings = fake_settings.model_copy(deep=True)
    settings.store.backend, settings.store.url = "pgvector", pg_url
    right, root = _corpus(tmp_path / "files")

    clean = f"clean-{uuid.uuid4().hex[:6]}"
    store = open_kb(settings, clean, FakeEmbedder(), create=True)
    assert not ingest_paths([root], store, FakeEmbedder(), settings, workers=1).failed
    store.close()
    want = _state(settings, clean)
    assert len(want[0]) == 12 + 6 + 1 and want[1] == want[2] > 0  # 20 files, dup-a/dup-b one document

    shared = f"shared-{uuid.uuid4().hex[:6]}"
    open_kb(settings, shared, FakeEmbedder(), create=True).close()
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings.model_dump(mode="json")))
    script = tmp_path / "ingester.py"
    script.write_text(_INGESTER.format(repo=str(REPO), tests=str(REPO / "tests")))
    releases = [tmp_path / "release-right", tmp_path / "release-root"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(settings_file), shared, str(release), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder, release in zip((right, root), releases, strict=True)
    ]
    for p in procs:  # both have planned against the empty KB: every file of theirs is new to them
        assert p.stdout is not None and p.stdout.readline().strip() == "planned", p.stderr.read() if p.stderr else ""
    # The worst order: the run over everything writes first, then the run over `right` writes the documents
    # it planned as new, all of which now exist (copies among them stored under a path it never names).
    t0 = time.perf_counter()
    for p, release in zip(reversed(procs), reversed(releases), strict=True):
        release.touch()
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["failed"] == [] and result["held"], out
    print(f"two ingests: {time.perf_counter() - t0:.1f} s")
    assert _state(settings, shared) == want
    backend = STORES.create("pgvector")
    backend.drop(settings, clean)
    backend.drop(settings, shared)
