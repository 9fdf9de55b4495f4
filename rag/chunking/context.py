"""Contextual chunk headers, built at ingestion without an LLM (issue 15 item 1).

A chunk of page 48 of a 10-K ("Net sales | 34,229 | 35,355") says neither whose filing it is nor
which year: embedded alone it looks like every other income statement. The header names the
document (title; for filings the company, form and period read from the cover pages or metadata),
the section path, and for a table its caption and column headers:

    3M COMPANY · Form 10-K · fiscal year ended December 31, 2022 — Item 8. Financial Statements
    — table: Consolidated Statement of Income; columns: 2022 | 2021 | 2020

The header is what gets embedded and keyword-indexed in front of the chunk; the stored chunk text,
its quotes and page offsets never include it. `HEADER_SCHEME` is recorded in the manifest: a KB
built with another scheme (or none) is re-embedded on request, never silently mixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.records import Chunk, ParsedDocument
from rag.text.sentences import first_table_row

HEADER_SCHEME = "identity-section-table/1"
COVER_PAGES = 2
_COMPANY = re.compile(
    r"^(?=.{3,80}$)(?:[A-Z0-9][\w&.,'’\- ]*?\b(?:INC|CORP|CORPORATION|COMPANY|CO|LTD|LIMITED|PLC|GROUP|HOLDINGS|N\.V|S\.A|AG|SE|LLC|LP|TRUST|BANCORP)\b\.?"
    r"|[\u4e00-\u9fff（）()]{2,40}(?:股份有限公司|有限责任公司|有限公司|集团))",
    re.IGNORECASE,
)
_FORM = re.compile(r"\bFORM\s+(10-K|10-Q|8-K|20-F|40-F|6-K|S-1|424B\d?)\b", re.IGNORECASE)
_ZH_FORM = re.compile(r"(招股说明书|年度报告|半年度报告|季度报告|债券募集说明书|上市公告书)")
_PERIOD = re.compile(
    r"(?:for the )?(fiscal year|year|quarterly period|quarter|six months|nine months|three months|transition period)"
    r"\s+ended\s+([A-Z][a-z]+\s+\d{1,2},?\s+\d{4})",
    re.IGNORECASE,
)
_ZH_PERIOD = re.compile(r"((?:19|20)\d{2}\s*年(?:度|第[一二三四]季度|半年度|\d{1,2}月\d{1,2}日)?)")
MAX_HEADER_CHARS = 240
_YEARISH = re.compile(r"(?:FY\s?)?(?:19|20)\d{2}(?:年(?:度)?)?|Q[1-4]\s?(?:19|20)\d{2}", re.IGNORECASE)
_FIGURE = re.compile(r"\d")


@dataclass(slots=True)
class DocumentLabel:
    """What names a document, for chunk headers: any part may be empty."""

    title: str = ""
    company: str = ""
    form: str = ""
    period: str = ""

    def text(self) -> str:
        form = f"Form {self.form}" if self.form and self.form.isascii() else self.form
        parts = [self.company or self.title, form, self.period]
        # A title adds something only when it is not the company again or SEC cover boilerplate.
        if self.company and self.title and not _redundant_title(self.title, self.company):
            parts.insert(0, self.title)
        return " · ".join(p for p in parts if p)


def _redundant_title(title: str, company: str) -> bool:
    low, name = title.lower(), company.lower().rstrip(".")
    return name in low or low in name or low.startswith(("united states", "securities and exchange", "form "))


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def document_label(doc: ParsedDocument) -> DocumentLabel:
    """The document's identity from its metadata and cover pages (first match of each kind wins)."""
    meta = doc.metadata or {}
    label = DocumentLabel(title=str(meta.get("title") or "").strip() or _clean_title(doc.title))
    cover = "\n".join(p.text for p in doc.pages[:COVER_PAGES])
    lines = _lines(cover)[:80]
    for line in lines:
        if not label.company and _COMPANY.match(line) and not line.lower().startswith(("securities", "united states")):
            label.company = line.rstrip(",;")
        if label.company:
            break
    if m := _FORM.search(cover):
        label.form = m.group(1).upper()
    elif m := _ZH_FORM.search(cover[:2000]):
        label.form = m.group(1)
    if m := _PERIOD.search(" ".join(lines)):
        label.period = f"{m.group(1).lower()} ended {m.group(2)}"
    elif label.form and not label.form.isascii() and (m := _ZH_PERIOD.search(cover[:1000])):
        # Only beside a named report kind: a Chinese cover without one is body text, its years anything.
        label.period = m.group(1).replace(" ", "")
    return label


def _clean_title(title: str) -> str:
    """A file-name title made readable: 'financebench__3M_2022_10K' -> '3M 2022 10K'."""
    stem = title.rsplit("__", 1)[-1]
    return " ".join(stem.replace("_", " ").split())


def _table_context(chunk: Chunk) -> str:
    """'table: <caption>; columns: <header cells>' for a chunk that holds a markdown table."""
    lines = chunk.text.splitlines()
    i = first_table_row(lines)
    if i is None:
        return ""
    cells = [c.strip() for c in lines[i].strip().strip("|").split("|") if c.strip()]
    caption = lines[i - 1].strip() if i > 0 and "|" not in lines[i - 1] else ""
    out = f"table: {caption}" if caption else "table"
    # A header row names columns (words, years); a first row of figures is data, not a header.
    if cells and all(_YEARISH.fullmatch(c) or not _FIGURE.search(c) for c in cells):
        out += "; columns: " + " | ".join(cells)
    return out


def chunk_header(label: DocumentLabel, chunk: Chunk) -> str:
    """The header embedded and indexed in front of `chunk` (see the module docstring)."""
    parts = [label.text(), chunk.section.strip(), _table_context(chunk)]
    header = " — ".join(p for p in parts if p)
    return header if len(header) <= MAX_HEADER_CHARS else header[: MAX_HEADER_CHARS - 1] + "…"


def apply_headers(doc: ParsedDocument, chunks: list[Chunk]) -> None:
    """Set each chunk's `context` to its header (the document's label is read once)."""
    label = document_label(doc)
    for chunk in chunks:
        chunk.context = chunk_header(label, chunk)
