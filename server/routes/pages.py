"""GET /v1/documents/{id}/pages/{n}.png: a page rendered with the cited quote highlighted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from rag.errors import CiteqaError, ConfigError, DocumentNotFound, KnowledgeBaseError
from server.auth import Principal, require_api_key
from server.deps import PrincipalDep, StateDep, existing_kb
from server.render import render_page_png
from server.routes.documents import original_file
from server.schemas import ERRORS, KB_NAME, MAX_PAGE
from server.state import AppState

router = APIRouter(prefix="/v1", tags=["documents"], dependencies=[Depends(require_api_key)], responses=ERRORS)


def find_document_kb(state: AppState, doc_id: str, principal: Principal) -> str:
    """The knowledge base holding `doc_id`: the default one first, then the others in name order.

    A document id derives from the file's content, so when two knowledge bases hold it they hold the
    same file and either renders the same page. Only the knowledge bases the caller's key may use are searched.
    """
    from rag.kb import list_kbs

    default = state.settings.paths.default_kb
    for kb in sorted(principal.visible(list_kbs(state.settings)), key=lambda name: (name != default, name)):
        try:
            state.store(kb).get_document(doc_id)
        except (KnowledgeBaseError, ConfigError):
            continue  # not there (DocumentNotFound), gone meanwhile, or a KB this server cannot open
        return kb
    raise DocumentNotFound(f"document {doc_id!r} not found in any knowledge base (pass ?kb=<name> to name one)")


@router.get(
    "/documents/{doc_id}/pages/{page}.png",
    response_class=Response,
    summary="Render a page as PNG with a quote highlighted",
    description="Without `kb`, the document is looked up in every knowledge base (the default one first), so a "
    "citation's `doc_id` and `page` are enough; with `kb`, only that one is searched (404 if the document is "
    "not in it).",
    responses={
        200: {"content": {"image/png": {}}, "description": "The page; header X-Highlight-Matches counts marked spots."}
    },
)
def page_png(
    doc_id: str,
    page: Annotated[int, Path(ge=1, le=MAX_PAGE, description="1-based page number, as in citations.")],
    state: StateDep,
    principal: PrincipalDep,
    kb: Annotated[
        str | None,
        Query(description="Knowledge base of the document (default: the one that holds it).", **KB_NAME),
    ] = None,
    highlight: Annotated[
        str | None, Query(max_length=4000, description="Text to highlight (a citation's quote).")
    ] = None,
    zoom: Annotated[float, Query(gt=0.2, le=4.0, description="Scale factor (1 = 72 dpi).")] = 1.5,
) -> Response:
    store = state.store(existing_kb(state, kb, principal) if kb else find_document_kb(state, doc_id, principal))
    info = store.get_document(doc_id)
    original = original_file(info)
    text: str | None
    try:
        text = store.page_text(doc_id, page)
    except (CiteqaError, IndexError, KeyError):
        text = None  # the original PDF is enough; without it the renderer reports what is missing
    png, matches = render_page_png(original, page, page_text=text, highlight=highlight, zoom=zoom)
    return Response(
        png,
        media_type="image/png",
        headers={"X-Highlight-Matches": str(matches), "Cache-Control": "private, max-age=300"},
    )
