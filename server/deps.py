"""FastAPI dependencies: the app's state, the job manager, knowledge-base names."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.jobs import JobManager
from server.state import AppState, kb_not_found


def get_state(request: Request) -> AppState:
    return request.app.state.citeqa  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobManager:
    return get_state(request).ensure_jobs()


def kb_name(state: AppState, name: str | None) -> str:
    """The named knowledge base, or the default one; validated (400 on a bad name)."""
    from rag.kb import validate_kb_name

    return validate_kb_name(name or state.settings.paths.default_kb)


def existing_kb(state: AppState, name: str | None) -> str:
    """Like kb_name, and the knowledge base must exist (404 otherwise)."""
    from rag.kb import kb_exists

    kb = kb_name(state, name)
    if not kb_exists(state.settings, kb):
        raise kb_not_found(kb)  # without the names of the others: a caller learns only about what it named
    return kb


StateDep = Annotated[AppState, Depends(get_state)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
