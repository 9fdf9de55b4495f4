"""FastAPI dependencies: the app's state, the job manager, the caller's key, knowledge-base names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from rag.errors import JobNotFound
from server.auth import Principal, require_api_key
from server.jobs import JobManager
from server.state import AppState, kb_not_found

if TYPE_CHECKING:
    from server.jobs import Job


def get_state(request: Request) -> AppState:
    return request.app.state.citeqa  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobManager:
    return get_state(request).ensure_jobs()


def kb_name(state: AppState, name: str | None) -> str:
    """The named knowledge base, or the default one; validated (400 on a bad name)."""
    from rag.kb import validate_kb_name

    return validate_kb_name(name or state.settings.paths.default_kb)


def existing_kb(state: AppState, name: str | None, principal: Principal, *, write: bool = False) -> str:
    """Like kb_name; the caller's key must allow it (403, before existence: a 403 says nothing about
    whether the KB exists) and the knowledge base must exist (404 otherwise)."""
    from rag.kb import kb_exists

    kb = kb_name(state, name)
    principal.check_kb(kb, write=write)
    if not kb_exists(state.settings, kb):
        raise kb_not_found(kb)  # without the names of the others: a caller learns only about what it named
    return kb


def visible_job(jobs: JobManager, job_id: str, principal: Principal) -> Job:
    """The job, if the key may see its knowledge base; another KB's job is as unknown as a wrong id (404)."""
    job = jobs.get(job_id)
    if not principal.allows(job.kb):
        raise JobNotFound(f"no ingestion job {job_id!r}")
    return job


StateDep = Annotated[AppState, Depends(get_state)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
PrincipalDep = Annotated[Principal, Depends(require_api_key)]
