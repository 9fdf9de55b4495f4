"""Many replicas, one store: two app instances (server.app.create_app, store=pgvector) answer searches
consistently while a third process ingests into the same PostgreSQL.

Each process is separate (as `citeqa serve` replicas would be); the apps are driven in-process with
Starlette's TestClient, so no ports are opened. The writer repeatedly replaces one document
(version k -> k+1) and adds new ones; every search a replica answers must show exactly one version
of that document — never none, never two — and once the writer is done both replicas must return
the same ranking.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import test_store_contract
from scale_servers import have_pgserver
from test_store_contract import EN_PAGES, ZH_PAGES, ingest, make_doc

from rag.settings import Settings
from rag.store import STORES

REPO = Path(__file__).resolve().parents[1]

pg_url = test_store_contract.pg_url  # the session's PostgreSQL, shared with the contract suite

pytestmark = [
    pytest.mark.scale,
    pytest.mark.slow,
    pytest.mark.skipif(not have_pgserver(), reason="needs pgserver + psycopg"),
]

_COMMON = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {tests!r}]
    import conftest
    conftest.EMBEDDERS.register("fake", conftest.make_fake_embedder)  # the session fixture is not here
    from rag.settings import Settings
    settings = Settings.model_validate(json.loads(Path(sys.argv[1]).read_text()))
    KB = sys.argv[2]
    """
)

_READER = _COMMON + textwrap.dedent(
    """
    stop = Path(sys.argv[3])
    def make_search():
        try:
            from fastapi.testclient import TestClient
            from server.app import create_app
        except ImportError:
            from rag.kb import open_kb
            from rag.retrieval import make_retriever
            from rag.retrieval import hit_to_dict
            store = open_kb(settings, KB, conftest.FakeEmbedder())
            retriever = make_retriever(store, conftest.FakeEmbedder(), settings.retrieval)
            return "store", lambda q: [hit_to_dict(h) for h in retriever.retrieve(q, 10).hits]
        client = TestClient(create_app(settings, embedder=conftest.FakeEmbedder()))
        client.__enter__()
        def search(q):
            r = client.post("/v1/search", json={{"query": q, "kb": KB, "k": 10}})
            assert r.status_code == 200, r.text
            return r.json()["hits"]
        return "app", search
    mode, search = make_search()
    from rag.store import STORES
    own = STORES.create(settings.store.backend).open(settings, KB, embedder_id="fake", dim=64, create=False)
    emb = conftest.FakeEmbedder()
    queries = violations = app_mixed = app_missing = 0
    seen_versions = set()
    def versions_of(texts):
        return {{t.split()[1] for t in texts if t.startswith("policymarker")}}
    print("ready", flush=True)
    while not stop.exists():
        # The store itself: one snapshot for the dense and the keyword query.
        hits = own.hybrid_search("policymarker statement", emb.embed_query("policymarker statement"), 10)
        versions = versions_of(h.chunk.text for h in hits)
        violations += len(versions) != 1
        # The replica's HTTP search (rag.retrieval's fusion of two store reads).
        app_versions = versions_of(h["text"] for h in search("policymarker statement"))
        app_missing += not app_versions
        app_mixed += len(app_versions) > 1
        seen_versions |= versions | app_versions
        queries += 1
    final = [h["chunk_id"] for h in search("policymarker statement")]
    final_q2 = [h["chunk_id"] for h in search("营业收入 新增文件")]
    print(json.dumps({{"mode": mode, "queries": queries, "violations": violations, "versions": sorted(seen_versions),
                      "app_mixed": app_mixed, "app_missing": app_missing,
                      "final": final, "final_q2": final_q2}}), flush=True)
    """
)

_WRITER = _COMMON + textwrap.dedent(
    """
    import numpy as np
    from rag.store import STORES
    from test_store_contract import make_doc
    emb = conftest.FakeEmbedder()
    store = STORES.create(settings.store.backend).open(settings, KB, embedder_id="fake", dim=64, create=False)
    current = store.find_by_path("/docs/policy.pdf").id
    for k in range(1, 13):
        doc, chunks = make_doc("policy.pdf", [f"policymarker v{{k}} statement of policy\\n\\npolicymarker v{{k}} second paragraph"], version=str(k))
        current = store.add_document(doc, chunks, emb.embed_documents([c.text for c in chunks]), replaces=current).id
        if k % 3 == 0:
            doc, chunks = make_doc(f"new-{{k}}.pdf", [f"新增文件 {{k}} 营业收入 说明\\n\\nextra text {{k}}"])
            store.add_document(doc, chunks, emb.embed_documents([c.text for c in chunks]))
        time.sleep(0.15)
    print(json.dumps({{"final": current}}), flush=True)
    """
)


def test_two_replicas_answer_consistently_while_a_third_process_ingests(
    fake_settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    settings = fake_settings.model_copy(deep=True)
    settings.store.backend = "pgvector"
    settings.store.url = pg_url
    settings.retrieval.min_score = 0.0
    # Replicas of the scale profile use a remote OpenAI-compatible LLM (never called by /v1/search);
    # loading llama.cpp in every replica process would only cost time.
    settings.llm.name = "openai:http://127.0.0.1:9/v1#none"
    kb = f"shared-{uuid.uuid4().hex[:6]}"
    store = STORES.create("pgvector").open(settings, kb, embedder_id="fake", dim=64, create=True)
    ingest(store, *make_doc("zh.pdf", ZH_PAGES))
    ingest(store, *make_doc("en.pdf", EN_PAGES))
    ingest(
        store,
        *make_doc(
            "policy.pdf", ["policymarker v0 statement of policy\n\npolicymarker v0 second paragraph"], version="0"
        ),
    )
    store.close()

    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings.model_dump(mode="json")))
    stop = tmp_path / "stop"
    fmt = {"repo": str(REPO), "tests": str(REPO / "tests")}
    (tmp_path / "reader.py").write_text(_READER.format(**fmt))
    (tmp_path / "writer.py").write_text(_WRITER.format(**fmt))

    def spawn(script: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(tmp_path / script), str(settings_file), kb, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )

    readers = [spawn("reader.py", str(stop)) for _ in range(2)]
    try:
        for r in readers:
            assert r.stdout is not None
            line = r.stdout.readline()
            assert line.strip() == "ready", r.stderr.read() if r.stderr else ""
        writer = spawn("writer.py")
        out, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
        final_doc = json.loads(out.strip().splitlines()[-1])["final"]
    finally:
        stop.touch()
    results = []
    for r in readers:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    for res in results:
        assert res["queries"] >= 5, res
        assert res["violations"] == 0, res  # every store answer showed exactly one version of the policy
        assert res["app_missing"] == 0, res  # no HTTP answer ever lost the document mid-replace
        assert "v12" in res["versions"] and len(res["versions"]) >= 2, res  # they saw the writer's progress
    assert results[0]["final"] == results[1]["final"] and results[0]["final_q2"] == results[1]["final_q2"]
    # The final version leads (page fusion puts other pages' best chunks before its second chunk).
    assert results[0]["final"][0].startswith(final_doc), (final_doc, results[0]["final"])
    # rag.retrieval runs its dense and keyword reads in one store.snapshot(): no HTTP answer may mix
    # the old and the new version of a document being replaced.
    assert all(r["app_mixed"] == 0 for r in results), results
    print(
        "reader modes:",
        [r["mode"] for r in results],
        "queries:",
        [r["queries"] for r in results],
        "http answers with two versions:",
        [r["app_mixed"] for r in results],
    )
