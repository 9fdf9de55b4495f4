"""Every sentence of a parsed PDF page can be found on that page.

Answers quote sentences of Page.text with exact offsets, so a quote must be text a user finds on the
PDF page. For each page of the bench PDFs below: split Page.text with the citation sentence splitter
and check each sentence (each cell, inside a table block) is a substring of PyMuPDF's own text of the
page, whitespace removed from both. PyMuPDF's text is taken in its stream order and in its
top-to-bottom block order (`sort=True`): a line the parser merged from blocks on one baseline (a
table header "December 31, 2022 | December 31, 2021") reads in the second, not the first.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from ingest.parsers.pdf import parse_pdf
from rag.records import Page
from rag.settings import IngestSettings
from rag.text.sentences import split_sentences

BENCH_DOCS = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "docs"

# The 8 PDFs the bench answers quote (Chinese wiki pages, earnings releases, a multi-column 8-K, a
# 10-Q) and long filings full of ruled and unruled tables (five 10-Ks, a 10-Q), all parsed without a
# single unfaithful sentence. All 53 bench PDFs take ~130 s on 2 cores, over the suite's budget; the
# rest still have a residue (0.2%: stacked multi-line table cells, chart labels) measured by hand.
DOCS = [
    "cmrc2018_zhwiki_vol01.pdf",
    "cmrc2018_zhwiki_vol02.pdf",
    "cmrc2018_zhwiki_vol03.pdf",
    "cmrc2018_zhwiki_vol04.pdf",
    "financebench__ULTABEAUTY_2023Q4_EARNINGS.pdf",
    "financebench__MGMRESORTS_2022Q4_EARNINGS.pdf",
    "financebench__JOHNSON_JOHNSON_2023_8K_dated-2023-08-30.pdf",
    "financebench__BESTBUY_2024Q2_10Q.pdf",
    "financebench__3M_2022_10K.pdf",
    "financebench__ADOBE_2022_10K.pdf",
    "financebench__AMAZON_2017_10K.pdf",
    "financebench__BESTBUY_2023_10K.pdf",
    "financebench__BLOCK_2020_10K.pdf",
    "docugami_10q__2023_Q3_AMZN.pdf",
]

_WS_RE = re.compile(r"\s+")
# Dot leaders: the parser writes " … " for a run of dots, as clean_line does.
_LEADER_RE = re.compile(r"[.·•…．]{4,}|(?:\. ){3,}\.?|…+")
_INVISIBLE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u200b\u200e\u200f\ufeff\ufffd]")
# A word hyphenated at a line end reads joined in Page.text (rag.lang.join_lines).
_HYPHEN_BREAK_RE = re.compile(r"(?<=[^\W\d_])-[ \t]*\n\s*(?=[a-z])")
_SEPARATOR_RE = re.compile(r"\|(?:-+\|)+")
_CELL_SPLIT_RE = re.compile(r"(?<!\\)\|")


def normalise(text: str) -> str:
    """The form compared: leaders folded, invisible characters and all whitespace removed, NFKC."""
    text = _INVISIBLE_RE.sub("", _LEADER_RE.sub("…", text))
    return _WS_RE.sub("", unicodedata.normalize("NFKC", text))


def page_references(page: Any) -> list[str]:
    raw = page.get_text()
    return [normalise(raw), normalise(_HYPHEN_BREAK_RE.sub("", raw)), normalise(page.get_text(sort=True))]


def checked_pieces(page: Page) -> list[str]:
    """The sentences of Page.text; inside a table block, the cells of each sentence."""
    tables = [(b.char_start, b.char_end) for b in page.blocks if b.kind == "table"]
    out: list[str] = []
    for s, e in split_sentences(page.text):
        sentence = page.text[s:e]
        if not any(a <= s and e <= b for a, b in tables):
            out.append(sentence)
        elif not _SEPARATOR_RE.fullmatch(sentence.strip()):
            out += [c.replace("\\|", "|").strip() for c in _CELL_SPLIT_RE.split(sentence) if c.strip()]
    return out


def unfaithful(path: Path) -> tuple[int, list[tuple[int, str]]]:
    """(pieces checked, [(page number, piece)] not found on their page)."""
    parsed = parse_pdf(path, IngestSettings(ocr=False))  # OCR'd text has no text layer to compare with
    failures: list[tuple[int, str]] = []
    checked = 0
    with pymupdf.open(path) as pdf:
        for page in parsed.pages:
            if page.ocr or not page.text:
                continue
            refs: list[str] | None = None
            for piece in checked_pieces(page):
                needle = normalise(piece)
                if not needle:
                    continue
                checked += 1
                refs = refs or page_references(pdf[page.number - 1])
                if not any(needle in ref for ref in refs):
                    failures.append((page.number, piece))
    return checked, failures


def test_bench_is_present() -> None:
    # Fail, not skip: without the bench this file proves nothing, and CI must say so.
    assert BENCH_DOCS.is_dir(), f"bench PDFs not found at {BENCH_DOCS} (expected ../shared/bench/docs)"
    missing = [name for name in DOCS if not (BENCH_DOCS / name).is_file()]
    assert not missing, f"bench PDFs missing from {BENCH_DOCS}: {missing}"


@pytest.mark.parametrize("name", DOCS)
def test_every_sentence_is_on_its_page(name: str) -> None:
    path = BENCH_DOCS / name
    assert path.is_file(), f"bench PDF not found: {path}"
    checked, failures = unfaithful(path)
    assert checked > 0, f"{name}: no text checked"
    listing = "\n".join(f"  {name} p{page}: {piece[:160]!r}" for page, piece in failures[:15])
    assert not failures, (
        f"{len(failures)} of {checked} sentences of {name} are not in PyMuPDF's text of their page:\n{listing}"
    )
