"""The typed records that flow one way through citeqa.

ParsedDocument -> Page -> Chunk -> Hit -> Answer / Citation.
Plain dataclasses: cheap to build by the million, picklable for worker processes,
and turned into JSON with `dataclasses.asdict` at the edges (CLI, server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Table:
    """A table found on a page, already rendered as markdown."""

    markdown: str
    header: str = ""  # the markdown header row + separator, repeated when a table is split
    bbox: tuple[float, float, float, float] | None = None


@dataclass(slots=True)
class Block:
    """A run of text on a page in reading order; `heading_level` > 0 marks a heading."""

    text: str
    char_start: int  # offset into Page.text
    char_end: int
    heading_level: int = 0
    kind: str = "text"  # "text" | "table"
    bbox: tuple[float, float, float, float] | None = None


@dataclass(slots=True)
class Page:
    """One page (1-based `number`) of a document; `text` is what citations quote from."""

    number: int
    text: str
    blocks: list[Block] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    ocr: bool = False
    header: str = ""  # running header/footer lines removed from `text`, kept as metadata


@dataclass(slots=True)
class ParsedDocument:
    source: str  # the path (or name) the document came from
    sha256: str
    title: str
    pages: list[Page]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def page_count(self) -> int:
        return len(self.pages)


@dataclass(slots=True)
class Chunk:
    """A retrievable span of one document. Offsets are into the text of `page_start`."""

    id: str
    doc_id: str
    text: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    section: str = ""
    token_count: int = 0
    doc: str = ""  # the document's display name, filled when chunks are read back from a store
    ordinal: int = 0  # position of the chunk inside its document
    # The contextual header (rag.chunking.context) embedded and keyword-indexed in front of `text`; never
    # part of the text, quotes or offsets. Set by the chunker; not stored, so chunks read back have "".
    context: str = ""


@dataclass(slots=True)
class Hit:
    chunk: Chunk
    score: float
    rank: int
    retriever: str  # "dense" | "keyword" | "hybrid" | "rerank" | "neighbour"
    scores: dict[str, float] = field(default_factory=dict)  # per-retriever scores, e.g. {"dense": 0.84, "rrf": 0.03}


@dataclass(slots=True)
class Citation:
    n: int
    doc: str
    page: int
    quote: str
    char_start: int = -1
    char_end: int = -1
    verified: bool = False
    chunk_id: str = ""
    doc_id: str = ""


@dataclass(slots=True)
class Answer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    sources: list[Hit] = field(default_factory=list)
    refused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    question: str = ""  # the standalone question actually answered (after follow-up rewriting)
    unsupported: list[str] = field(default_factory=list)  # sentences no source supported
    units: list[EvidenceUnit] = field(default_factory=list)  # what the prompt numbered: [n] = units[n-1]
    # refused, but retrieval found strong evidence: the best units, shown as passages (not an answer)
    evidence: list[Citation] = field(default_factory=list)
    draft: str = ""  # what the model wrote, before checking (for evaluation; never shown as the answer)


@dataclass(slots=True)
class EvidenceUnit:
    """One citable piece of a retrieved chunk: a sentence, a table row, a list item (or a heading,
    shown for context and never cited). `text == page_text(doc_id, page)[char_start:char_end]`."""

    n: int  # its number in the prompt: the model cites [n]
    id: str  # stable for the same knowledge-base content: "<chunk id>:<offset in the chunk>"
    doc: str
    doc_id: str
    page: int
    char_start: int  # in the page text; -1 when the unit is not found there (then never cited)
    char_end: int
    text: str
    kind: str  # "sentence" | "row" | "item" | "heading" | "header"
    chunk_id: str
    score: float  # the retrieval score of its chunk
    context: str = ""  # what its support is judged on: the unit with its neighbours, a row with its header

    @property
    def citable(self) -> bool:
        return self.n > 0 and self.char_start >= 0


@dataclass(slots=True)
class Evidence:
    """A retrieved passage shown while the model is still writing: found, not yet an answer."""

    doc: str
    doc_id: str
    page: int
    text: str  # the chunk's sentence that best matches the question
    chunk_id: str
    score: float


@dataclass(slots=True)
class Retrieved:
    """`ask_stream(events=True)` yields this as soon as retrieval is done, before any token."""

    evidence: list[Evidence]
    seconds: float


@dataclass(slots=True)
class Status:
    """What an answer is waiting for: "rewriting", "retrieving", "translating" (the question, to search
    the other language) or "thinking" (the model's prompt)."""

    stage: str


@dataclass(slots=True)
class DocumentInfo:
    """A document as a knowledge base stores it."""

    id: str
    source: str
    title: str
    sha256: str
    pages: int
    chunks: int
    added_at: float = 0.0
    paths: list[str] = field(default_factory=list)


def display_name(source: str) -> str:
    """How a document is named in citations: its file name (the full source path stays in DocumentInfo)."""
    return Path(source).name or source


def indexed_text(chunk: Chunk) -> str:
    """What the embedder and the keyword index see for a chunk: its header, a line break, its text."""
    return f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text
