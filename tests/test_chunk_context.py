"""Contextual chunk headers (issue 15 item 1): the document's identity, section and table columns."""

from __future__ import annotations

from conftest import require_bench

from ingest.parsers import parse_file
from rag.chunking import make_chunker
from rag.chunking.context import DocumentLabel, chunk_header, document_label
from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.records import Chunk, Page, ParsedDocument, indexed_text
from rag.settings import Settings, load_settings
from rag.store import chunk_text_hash
from rag.store.migrate import migrate_kb, open_target


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
    chunk.context = header
    assert indexed_text(chunk) == header + "\n" + table
    # A first row of figures is data, not column names.
    data = chunk_header(DocumentLabel(), _chunk("| Net sales | $ 34,229 | $ 35,355 |"))
    assert data == "table"
    assert len(chunk_header(DocumentLabel(title="t" * 500), _chunk("x"))) <= 240


_COVER = "UNITED STATES\nSECURITIES AND EXCHANGE COMMISSION\nFORM 10-K\nBOREALIS FOODS CORP.\nFor the fiscal year ended June 30, 2022"
_BODY = "Revenue grew because shipments of frozen noodles to grocery chains doubled during the year."


def _filing() -> ParsedDocument:
    return ParsedDocument(source="/x/borealis.pdf", sha256="2" * 64, title="borealis",
                          pages=[Page(1, _COVER), Page(2, _BODY)])  # fmt: skip


def test_the_chunker_sets_headers_only_when_enabled(fake_settings: Settings) -> None:
    fake = make_embedder(fake_settings.embedder)
    with_headers = make_chunker(fake_settings.chunking, fake.count_tokens).chunk(_filing(), "d1")
    body = next(c for c in with_headers if "noodles" in c.text)
    assert body.context.startswith("BOREALIS FOODS CORP. · Form 10-K")
    assert body.text == _BODY  # stored text untouched
    off = fake_settings.chunking.model_copy(update={"headers": False})
    assert all(c.context == "" for c in make_chunker(off, fake.count_tokens).chunk(_filing(), "d1"))


def test_header_words_are_keyword_searchable_and_key_the_vector_on_every_copy(
    fake_settings: Settings, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """ "Borealis" appears only in the header of the body chunk: the keyword index must see it, the vector
    cache is keyed by the header + text, and a migrated copy rebuilds the header for its own index."""
    fake = make_embedder(fake_settings.embedder)
    doc = _filing()
    chunks = make_chunker(fake_settings.chunking, fake.count_tokens).chunk(doc, "d1")
    store = open_kb(fake_settings, "ctx", fake, create=True)
    try:
        store.add_document(doc, chunks, fake.embed_documents([indexed_text(c) for c in chunks]))
        body = next(c for c in chunks if "noodles" in c.text)
        hits = store.keyword_search("borealis shipments", 5)
        assert hits and hits[0].chunk.id == body.id
        assert hits[0].chunk.text == _BODY and hits[0].chunk.context == ""  # headers are not stored
        assert chunk_text_hash(indexed_text(body)) in store.cached_vectors([chunk_text_hash(indexed_text(body))])
        assert store.cached_vectors([chunk_text_hash(body.text)]) == {}
        copy = open_target(fake_settings, "ctx-copy", store)
        try:
            migrate_kb(store, copy)
            moved = copy.keyword_search("borealis shipments", 5)
            assert moved and moved[0].chunk.id == body.id
        finally:
            copy.close()
    finally:
        store.close()
