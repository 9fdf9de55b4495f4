"""POST /v1/search: ranked chunks with document and page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from rag.protocols import SearchFilter
from server.auth import require_api_key
from server.deps import PrincipalDep, StateDep, existing_kb
from server.schemas import ERRORS, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search and ask"], dependencies=[Depends(require_api_key)], responses=ERRORS)


@router.post("/search", response_model=SearchResponse, summary="Retrieve the best chunks for a query")
def search(body: SearchRequest, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    from rag.retrieval import hit_to_dict

    kb = existing_kb(state, body.kb, principal)
    k = body.k or state.settings.retrieval.top_k
    flt = SearchFilter(doc_ids=list(body.doc_ids)) if body.doc_ids else None
    result = state.retriever(kb).retrieve(body.query, k, flt)
    return {
        "kb": kb,
        "query": body.query,
        "hits": [hit_to_dict(h) for h in result.hits],
        "no_evidence": bool(result.no_evidence),
        "best_score": float(result.best_score),
        "unembedded": int(result.unembedded),
        "timings": {key: float(v) for key, v in (result.timings or {}).items()},
    }
