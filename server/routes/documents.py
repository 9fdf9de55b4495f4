"""Documents of a knowledge base: upload (ingested by a background job), list, get, delete, re-ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from rag.errors import DocumentNotFound, InvalidRequest, PayloadTooLarge
from rag.records import DocumentInfo
from server.auth import require_api_key
from server.deps import JobsDep, PrincipalDep, StateDep, existing_kb, get_jobs, get_state, kb_name
from server.schemas import ERRORS, DocumentList, DocumentOut, JobOut, KBName, UploadResponse, links
from server.state import AppState
from server.uploads import SavedFile, check_extension, read_upload_form, sanitize_filename, save_upload

router = APIRouter(
    prefix="/v1/kbs/{kb}/documents", tags=["documents"], dependencies=[Depends(require_api_key)], responses=ERRORS
)

UPLOAD_MEDIA_TYPES = (
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/epub+zip",
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
                            "minItems": 1,
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
                },
                # What `files` parts hold: each is a file part whose file name has an accepted extension
                # (a part without a file name is a plain text field, not a file).
                "encoding": {
                    "files": {
                        "contentType": ", ".join(UPLOAD_MEDIA_TYPES),
                        "headers": {
                            "Content-Disposition": {
                                "description": '`form-data; name="files"; filename="<name>.<ext>"`, '
                                "ext one of pdf, txt, md, markdown, html, htm, docx, epub.",
                                "schema": {"type": "string"},
                                "example": 'form-data; name="files"; filename="report.pdf"',
                            }
                        },
                    }
                },
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


def form_flag(value: object, name: str) -> bool:
    """A boolean form field, as the schema has it: `true` or `false` (or absent); anything else is a 400."""
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in {"", "true", "false"}:
        raise InvalidRequest(f"{name}: expected true or false, got {str(value)[:40]!r}")
    return word == "true"


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
    responses={
        202: {
            "description": "The job that ingests the files",
            "links": links(
                job=("GET", "/v1/jobs/{job_id}", {"job_id": "$response.body#/job/id"}),
                cancel=("POST", "/v1/jobs/{job_id}/cancel", {"job_id": "$response.body#/job/id"}),
            ),
        }
    },
    summary="Upload files; a background job ingests them (poll GET /v1/jobs/{id})",
    description=(
        "A `multipart/form-data` body with one or more `files` parts (`file` is accepted too).\n\n"
        "* `create`: create the knowledge base if it is missing. Accepted as the query parameter "
        "`?create=true` or as a form field `create=true`; either one is enough.\n"
        "* `password` (form field only, so it stays out of URLs and access logs): opens the encrypted PDFs "
        "of this upload; it is handed to the parser and not stored.\n\n"
        "The job reports `failed` when no file could be ingested; otherwise `succeeded`, with "
        "`files_failed` and `summary.failed` naming the files that could not be ingested."
    ),
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    kb: KBName,
    request: Request,
    principal: PrincipalDep,
    create: Annotated[
        bool, Query(description="Create the knowledge base if it is missing (same as the form field `create`).")
    ] = False,
) -> dict[str, Any]:
    from ingest.parsers import supported_extensions

    state: AppState = get_state(request)
    principal.check_kb(kb_name(state, kb), write=True)  # before a byte of the body is read
    limits = state.settings.server
    max_bytes = limits.max_upload_mb * (1 << 20)
    # Each file stops at max_bytes as it arrives; the whole body at server.middleware.BodyLimitMiddleware's.
    form = await read_upload_form(request, max_files=limits.max_upload_files, max_file_bytes=max_bytes)
    try:
        files = [f for f in form.getlist("files") + form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest("no files in the upload: send multipart/form-data with one or more 'files' parts")
        create = form_flag(form.get("create", ""), "create") or create
        password = form.get("password")
        if password is not None and not isinstance(password, str):
            raise InvalidRequest("password: send it as a plain form field, not as a file")
        kb = kb_name(state, kb) if create else await run_in_threadpool(existing_kb, state, kb, principal)
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
def list_documents(kb: KBName, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    kb = existing_kb(state, kb, principal)
    docs = sorted(state.store(kb).list_documents(), key=lambda d: d.added_at, reverse=True)
    return {"kb": kb, "documents": [document_out(d, state) for d in docs]}


@router.get("/{doc_id}", response_model=DocumentOut, summary="One document")
def get_document(kb: KBName, doc_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return document_out(state.store(existing_kb(state, kb, principal)).get_document(doc_id), state)


@router.delete("/{doc_id}", summary="Remove a document (and its uploaded file)")
def delete_document(kb: KBName, doc_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, str]:
    kb = existing_kb(state, kb, principal, write=True)
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
def reingest(kb: KBName, doc_id: str, state: StateDep, jobs: JobsDep, principal: PrincipalDep) -> dict[str, Any]:
    kb = existing_kb(state, kb, principal, write=True)
    store = state.store(kb)
    info = store.get_document(doc_id)
    original = original_file(info)
    if original is None:
        name = Path(info.source).name or info.title
        raise DocumentNotFound(f"document {doc_id} ({name}): the original file is gone, upload it again")
    # The job drops the old version first (kept with the job, so a resumed reingest does the same).
    return jobs.submit(kb, [original], kind="reingest", doc_id=doc_id).to_dict()
