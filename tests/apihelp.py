"""Helpers shared by the REST API tests."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def wait_job(client: TestClient, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """The job once it has ended (or as it stands after `timeout` seconds, for the test to judge)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in FINAL_STATES or time.monotonic() > deadline:
            return job
        time.sleep(0.05)
