"""Documents of a knowledge base: upload (ingested by a background job), list, get, delete, re-ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import DocumentNotFound, InvalidRequest, PayloadTooLarge
from rag.records import DocumentInfo
from server.auth import require_api_key
from server.deps import JobsDep, StateDep, existing_kb, get_jobs, get_state, kb_name
from server.schemas import ERRORS, DocumentList, DocumentOut, JobOut, UploadResponse
from server.state import AppState
from server.uploads import SavedFile, check_extension, sanitize_filename, save_upload

router = APIRouter(
    prefix="/v1/kbs/{kb}/documents", tags=["documents"], dependencies=[Depends(require_api_key)], responses=ERRORS
)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or many files (pdf, txt, md, html, docx, epub).",
                        },
                        "create": {
                            "type": "boolean",
                            "description": "Create the knowledge base if it is missing "
                            "(also accepted as the query parameter `?create=true`).",
                        },
                        "password": {
                            "type": "string",
                            "format": "password",
                            "description": "Password of the encrypted PDFs in this upload (not stored).",
                        },
                    },
                }
            }
        },
    }
}


def original_file(info: DocumentInfo) -> Path | None:
    """The document's original file, if it is still on disk (upload copy or CLI source path)."""
    for candidate in [info.source, *info.paths]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def document_out(info: DocumentInfo, state: AppState) -> dict[str, Any]:
    """A document as the API shows it: its files named relative to CITEQA_HOME, never by server path."""
    original = original_file(info)
    return {
        "id": info.id,
        "name": Path(info.source).name or info.title,
        "title": info.title,
        "source": state.public_path(info.source),
        "sha256": info.sha256,
        "pages": info.pages,
        "chunks": info.chunks,
        "added_at": info.added_at,
        "paths": [state.public_path(p) for p in info.paths],
        "has_original": original is not None and original.suffix.lower() == ".pdf",
    }


TRUE_WORDS = {"1", "true", "yes", "on"}


def _save_all(state: AppState, kb: str, uploads: list[tuple[UploadFile, str]], limit: int) -> list[SavedFile]:
    directory = state.files_dir(kb)
    saved: list[SavedFile] = []
    try:
        for upload, name in uploads:
            upload.file.seek(0)
            saved.append(save_upload(upload.file, upload.filename or name, name, directory, limit))
    except BaseException:
        for item in saved:  # all or nothing: no half-saved batch left behind without a job
            item.path.unlink(missing_ok=True)
        raise
    return saved


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    summary="Upload files; a background job ingests them (poll GET /v1/jobs/{id})",
    description=(
        "A `multipart/form-data` body with one or more `files` parts (`file` is accepted too).\n\n"
        "* `create`: create the knowledge base if it is missing. Accepted as the query parameter "
        "`?create=true` or as a form field `create=true` (`1`, `yes`, `on` work too); either one is enough.\n"
        "* `password` (form field only, so it stays out of URLs and access logs): opens the encrypted PDFs "
        "of this upload; it is handed to the parser and not stored.\n\n"
        "The job reports `failed` when no file could be ingested; otherwise `succeeded`, with "
        "`files_failed` and `summary.failed` naming the files that could not be ingested."
    ),
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    kb: str,
    request: Request,
    create: Annotated[
        bool, Query(description="Create the knowledge base if it is missing (same as the form field `create`).")
    ] = False,
) -> dict[str, Any]:
    from ingest.parsers import supported_extensions

    state: AppState = get_state(request)
    limits = state.settings.server
    max_bytes = limits.max_upload_mb * (1 << 20)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes * limits.max_upload_files + (1 << 20):
        raise PayloadTooLarge(
            f"request body of {int(declared) >> 20} MB exceeds the upload limits "
            f"({limits.max_upload_files} files x {limits.max_upload_mb} MB)"
        )
    try:
        form = await request.form(max_files=limits.max_upload_files, max_fields=100)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise PayloadTooLarge(
                f"too many files in one upload: at most {limits.max_upload_files} (server.max_upload_files)"
            ) from exc
        raise InvalidRequest(f"malformed multipart upload: {exc.detail}") from exc
    try:
        files = [f for f in form.getlist("files") + form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest("no files in the upload: send multipart/form-data with one or more 'files' parts")
        create = create or str(form.get("create", "")).lower() in TRUE_WORDS
        password = form.get("password")
        if password is not None and not isinstance(password, str):
            raise InvalidRequest("password: send it as a plain form field, not as a file")
        kb = kb_name(state, kb) if create else await run_in_threadpool(existing_kb, state, kb)
        allowed = supported_extensions()
        checked: list[tuple[UploadFile, str]] = []
        for f in files:
            name = sanitize_filename(f.filename or "")  # save_upload makes it unique in files/
            check_extension(name, allowed)
            if f.size is not None and f.size > max_bytes:
                raise PayloadTooLarge(
                    f"{name}: {f.size >> 20} MB is larger than the upload limit of {limits.max_upload_mb} MB"
                )
            checked.append((f, name))
        if create:
            await run_in_threadpool(state.store, kb, create=True)
        saved = await run_in_threadpool(_save_all, state, kb, checked, max_bytes)
    finally:
        await form.close()
    job = get_jobs(request).submit(kb, [s.path for s in saved], password=password or None)
    return {
        "job": job.to_dict(),
        "files": [{"original": s.original, "name": s.name, "bytes": s.bytes} for s in saved],
    }


@router.get("", response_model=DocumentList, summary="List the documents of a knowledge base")
def list_documents(kb: str, state: StateDep) -> dict[str, Any]:
    kb = existing_kb(state, kb)
    docs = sorted(state.store(kb).list_documents(), key=lambda d: d.added_at, reverse=True)
    return {"kb": kb, "documents": [document_out(d, state) for d in docs]}


@router.get("/{doc_id}", response_model=DocumentOut, summary="One document")
def get_document(kb: str, doc_id: str, state: StateDep) -> dict[str, Any]:
    return document_out(state.store(existing_kb(state, kb)).get_document(doc_id), state)


@router.delete("/{doc_id}", summary="Remove a document (and its uploaded file)")
def delete_document(kb: str, doc_id: str, state: StateDep) -> dict[str, str]:
    kb = existing_kb(state, kb)
    store = state.store(kb)
    info = store.get_document(doc_id)
    store.remove_document(doc_id)
    files = state.files_dir(kb).resolve()
    for candidate in [info.source, *info.paths]:
        path = Path(candidate).resolve()
        if path.parent == files and store.find_by_path(str(candidate)) is None:
            path.unlink(missing_ok=True)  # only our own upload copies, never a user's source file
    return {"deleted": doc_id}


@router.post(
    "/{doc_id}/reingest",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Parse, chunk and embed a document again from its original file (a background job)",
)
def reingest(kb: str, doc_id: str, state: StateDep, jobs: JobsDep) -> dict[str, Any]:
    kb = existing_kb(state, kb)
    store = state.store(kb)
    info = store.get_document(doc_id)
    original = original_file(info)
    if original is None:
        name = Path(info.source).name or info.title
        raise DocumentNotFound(f"document {doc_id} ({name}): the original file is gone, upload it again")

    def drop_old_version() -> None:
        # Unchanged content would be skipped by the incremental pipeline; re-ingesting means starting over.
        store.remove_document(doc_id)

    return jobs.submit(kb, [original], kind="reingest", before=drop_old_version).to_dict()
