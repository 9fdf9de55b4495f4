"""Ingestion jobs: list, status with progress, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from server.auth import require_api_key
from server.deps import JobsDep
from server.schemas import ERRORS, JobList, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)], responses=ERRORS)


@router.get("", response_model=JobList, summary="Recent ingestion jobs, newest first")
def list_jobs(jobs: JobsDep, kb: str | None = None) -> dict[str, Any]:
    return {"jobs": [j.to_dict() for j in jobs.list(kb)]}


@router.get("/{job_id}", response_model=JobOut, summary="A job's state and progress")
def get_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return jobs.get(job_id).to_dict()


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job (it stops between files)")
def cancel_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return jobs.cancel(job_id).to_dict()


@router.delete("/{job_id}", response_model=JobOut, summary="Cancel a job (same as POST .../cancel)")
def delete_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return jobs.cancel(job_id).to_dict()
