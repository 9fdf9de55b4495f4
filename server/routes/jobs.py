"""Ingestion jobs: list (paged), status with progress, cancel. Jobs outlive restarts (server.jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from server.auth import require_api_key
from server.deps import JobsDep, PrincipalDep, visible_job
from server.schemas import ERRORS, MAX_JOBS_PAGE, MAX_OFFSET, JobList, JobOut, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)], responses=ERRORS)


@router.get(
    "",
    response_model=JobList,
    summary="Ingestion jobs, newest first, a page at a time",
    description="Jobs are kept across restarts; finished ones are forgotten after `server.jobs_keep_days` "
    "(default 7). Page with `limit` and `offset` (the response's `next_offset` is the next page's).",
)
def list_jobs(
    jobs: JobsDep,
    principal: PrincipalDep,
    kb: Annotated[str | None, Query(description="Only this knowledge base's jobs.")] = None,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_JOBS_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    if kb is not None:
        principal.check_kb(kb)
    # Only the key's knowledge bases, filtered in the query so that pages and `total` agree.
    page, total = jobs.list(kb, kbs=principal.kbs, state=state, limit=limit, offset=offset)
    end = offset + len(page)
    return {
        "jobs": [j.to_dict() for j in page],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < total else None,
    }


@router.get("/{job_id}", response_model=JobOut, summary="A job's state and progress")
def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> dict[str, Any]:
    return visible_job(jobs, job_id, principal).to_dict()


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job (it stops between files)")
def cancel_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.check_kb(visible_job(jobs, job_id, principal).kb, write=True)
    return jobs.cancel(job_id).to_dict()


@router.delete("/{job_id}", response_model=JobOut, summary="Cancel a job (same as POST .../cancel)")
def delete_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> dict[str, Any]:
    return cancel_job(job_id, jobs, principal)
