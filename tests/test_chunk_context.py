"""Contextual chunk headers (issue 15 item 1): the document's identity, section and table columns."""

from __future__ import annotations

from conftest import require_bench

from ingest.parsers import parse_file
from rag.chunking.context import DocumentLabel, chunk_header, contextual_text, document_label
from rag.records import Chunk, Page, ParsedDocument
from rag.settings import load_settings


def _chunk(text: str, section: str = "") -> Chunk:
    return Chunk(
        id="d-00000", doc_id="d", text=text, page_start=3, page_end=3, char_start=0, char_end=len(text), section=section
    )


def test_a_real_10q_cover_names_company_form_and_period() -> None:
    bench = require_bench()
    doc = parse_file(bench / "docs" / "docugami_10q__2023_Q3_AAPL.pdf", load_settings().ingest)
    label = document_label(doc)
    assert label.company == "Apple Inc." and label.form == "10-Q"
    assert label.period == "quarterly period ended July 1, 2023"
    assert label.text() == "Apple Inc. · Form 10-Q · quarterly period ended July 1, 2023"


def test_cover_boilerplate_and_chinese_body_text_are_not_identity() -> None:
    cover = "UNITED STATES\nSECURITIES AND EXCHANGE COMMISSION\nFORM 10-K\nBOREALIS FOODS CORP.\nFor the fiscal year ended June 30, 2022"
    doc = ParsedDocument(source="/x/b.pdf", sha256="0" * 64, title="b", pages=[Page(1, cover)],
                         metadata={"title": "UNITED STATES SECURITIES AND EXCHANGE COMMISSION"})  # fmt: skip
    assert document_label(doc).text() == "BOREALIS FOODS CORP. · Form 10-K · fiscal year ended June 30, 2022"
    wiki = ParsedDocument(source="/x/v.pdf", sha256="1" * 64, title="中文维基百科条目选辑 第1册",
                          pages=[Page(1, "1926年，某某大学成立。")])  # fmt: skip
    assert document_label(wiki).period == ""  # a year in body text is not the document's period


def test_header_has_section_and_table_columns_and_never_enters_the_chunk_text() -> None:
    label = DocumentLabel(company="3M COMPANY", form="10-K", period="fiscal year ended December 31, 2022")
    table = "Consolidated Statement of Income\n| (Millions) | 2022 | 2021 | 2020 |\n|---|---|---|---|\n| Net sales | 34,229 | 35,355 | 32,184 |"
    chunk = _chunk(table, section="Item 8. Financial Statements")
    header = chunk_header(label, chunk)
    assert header == (
        "3M COMPANY · Form 10-K · fiscal year ended December 31, 2022 — Item 8. Financial Statements — "
        "table: Consolidated Statement of Income; columns: (Millions) | 2022 | 2021 | 2020"
    )
    assert chunk.text == table  # the stored text, quotes and offsets are untouched
    assert contextual_text(header, chunk.text) == header + "\n" + table
    # A first row of figures is data, not column names.
    data = chunk_header(DocumentLabel(), _chunk("| Net sales | $ 34,229 | $ 35,355 |"))
    assert data == "table"
    assert len(chunk_header(DocumentLabel(title="t" * 500), _chunk("x"))) <= 240
