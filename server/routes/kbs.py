"""Knowledge bases: create, list, stats, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status

from rag.errors import ConfigError, KnowledgeBaseError, KnowledgeBaseExists, KnowledgeBaseNotFound
from server.auth import require_api_key
from server.deps import PrincipalDep, StateDep, existing_kb, kb_name
from server.schemas import ERRORS, KBCreate, KBList, KBName, KBStats, links
from server.state import AppState

router = APIRouter(
    prefix="/v1/kbs", tags=["knowledge bases"], dependencies=[Depends(require_api_key)], responses=ERRORS
)


# Store stats that name server locations: never sent to clients (a remote URL, already redacted, stays).
PRIVATE_STATS = ("path", "folder", "dir")


def kb_stats(state: AppState, kb: str) -> dict[str, Any]:
    stats = dict(state.store(kb).stats())
    stats.pop("name", None)
    for key in PRIVATE_STATS:
        stats.pop(key, None)
    uri = stats.get("uri")
    if isinstance(uri, str) and "://" not in uri:  # Milvus Lite: a local database file
        stats.pop("uri")
    return {"name": kb, **stats}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KBStats,
    summary="Create a knowledge base",
    responses={
        201: {
            "description": "The new knowledge base",
            "links": links(
                stats=("GET", "/v1/kbs/{kb}", {"kb": "$response.body#/name"}),
                documents=("GET", "/v1/kbs/{kb}/documents", {"kb": "$response.body#/name"}),
                delete=("DELETE", "/v1/kbs/{kb}", {"kb": "$response.body#/name"}),
            ),
        }
    },
)
def create_kb(body: KBCreate, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    from rag.kb import kb_exists

    kb = kb_name(state, body.name)
    principal.check_kb(kb, write=True)
    if kb_exists(state.settings, kb):
        raise KnowledgeBaseExists(f"knowledge base {kb!r} already exists")
    state.store(kb, create=True)
    return kb_stats(state, kb)


@router.get("", response_model=KBList, summary="List knowledge bases with their sizes")
def list_all(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    from rag.kb import list_kbs

    kbs: list[dict[str, Any]] = []
    for kb in principal.visible(list_kbs(state.settings)):  # only the key's own
        try:
            kbs.append(kb_stats(state, kb))
        except KnowledgeBaseNotFound:  # removed since it was listed
            continue
        except (
            KnowledgeBaseError,
            ConfigError,
        ) as exc:  # one unusable KB (other embedder, bad manifest) must not hide the others
            kbs.append({"name": kb, "error": state.redact(f"{type(exc).__name__}: {exc}")})
    return {"kbs": kbs, "default": state.settings.paths.default_kb, "read_only": principal.read_only}


@router.get("/{kb}", response_model=KBStats, summary="A knowledge base's stats (documents, chunks, embedder...)")
def stats(kb: KBName, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return kb_stats(state, existing_kb(state, kb, principal))


@router.delete("/{kb}", summary="Delete a knowledge base, its indexes and its uploaded files")
def delete_kb(kb: KBName, state: StateDep, principal: PrincipalDep) -> dict[str, str]:
    state.remove_kb(existing_kb(state, kb, principal, write=True))
    return {"deleted": kb}
