"""kill -9 during writes leaves the old state or the new one, and the derived indexes catch up."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.kb import open_kb
from rag.settings import Settings

WRITER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from rag.settings import load_settings
from rag.store.sqlite_faiss import SqliteFaissBackend
from storehelp import make_doc
settings = load_settings(overrides={"paths.home": sys.argv[1], "embedder.name": "fake"})
store = SqliteFaissBackend().open(settings, "kill", embedder_id="fake", dim=64, create=True)
rng = np.random.default_rng(int(sys.argv[3]))
for i in range(10_000):
    n = int(rng.integers(20, 60))
    version = i % 3
    doc, chunks = make_doc(f"/d/doc{i % 7}.pdf", [[f"doc {i % 7} v{i} chunk {j} 公司 revenue" for j in range(n)]])
    old = store.find_by_path(doc.source)
    vecs = rng.standard_normal((n, 64)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.add_document(doc, chunks, vecs, replaces=old.id if old else None)
    if i % 5 == 4:
        store.flush()
    print(i, flush=True)
"""


@pytest.mark.slow
def test_kill_during_writes_keeps_kb_consistent(fake_settings: Settings, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    home = str(fake_settings.paths.home)
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    rnd = random.Random(7)
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), home, tests_dir, str(round_)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        # Wait for a few writes, then kill at a random moment.
        for _ in range(rnd.randint(2, 6)):
            if not proc.stdout.readline():
                break
        time.sleep(rnd.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        store = open_kb(fake_settings, "kill")
        conn = sqlite3.connect(str(Path(home) / "kill" / "kb.sqlite"))
        per_doc = conn.execute(
            "SELECT d.id, d.source, COUNT(c.rowid), MAX(c.text) FROM documents d JOIN chunks c ON c.doc_id=d.id GROUP BY d.id"
        ).fetchall()
        # Each document holds exactly the chunks of one version, never a mix or a partial write.
        for doc_id, _source, _count, text in per_doc:
            version = text.split(" v", 1)[1].split(" ", 1)[0]
            assert (
                conn.execute(
                    "SELECT COUNT(*) FROM chunks WHERE doc_id=? AND text NOT LIKE ?",
                    (doc_id, f"% v{version} %"),
                ).fetchone()[0]
                == 0
            )
            assert conn.execute("SELECT COUNT(*) FROM document_paths WHERE doc_id=?", (doc_id,)).fetchone()[0] == 1
        assert len({s for _, s, _, _ in per_doc}) == len(per_doc) <= 7
        total = sum(c for _, _, c, _ in per_doc)
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == total  # no orphans, none missing
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')")
        conn.close()
        stats = store.stats()
        assert stats["chunks"] == total
        assert len(store.keyword_search("revenue", 1000)) == total
        import numpy as np

        hits = store.dense_search(np.ones(64, dtype="float32") / 8.0, 10_000)
        assert len(hits) == total and len({h.chunk.id for h in hits}) == total
        store.close()
