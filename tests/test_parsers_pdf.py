"""PDF parsing on PDFs made in the test: pages, offsets, Chinese joining, layout, headers, headings, tables."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest
from pdfgen import make_pdf

from ingest.parsers import parse_file, supported_extensions
from ingest.parsers.layout import Line, find_gutter, reading_order
from rag.records import ParsedDocument
from rag.settings import IngestSettings

HAN_SPACE = re.compile(r"[\u4e00-\u9fff] +[\u4e00-\u9fff]")

ZH = (
    "营业收入同比增长百分之二十，主要由于海外市场的扩张以及新产品的推出。公司在报告期内继续加大研发投入，"
    "研发费用占营业收入的比例达到百分之八，研发人员数量增加到一千二百人。"
)
EN = (
    "The company reported strong results for the year. Revenue grew by twenty percent compared with the "
    "previous year, driven by inter-\nnational expansion and new products launched in the second half."
)


def check_offsets(doc: ParsedDocument) -> None:
    for page in doc.pages:
        for block in page.blocks:
            assert page.text[block.char_start : block.char_end] == block.text
        for a, b in zip(page.blocks, page.blocks[1:]):
            assert a.char_end <= b.char_start


@pytest.fixture
def ingest() -> IngestSettings:
    return IngestSettings()


def test_mixed_pdf_pages_offsets_chinese_and_hyphenation(tmp_path: Path, ingest: IngestSettings) -> None:
    path = make_pdf(
        tmp_path / "mixed.pdf", [EN, ZH + "\n\n" + ZH, "第三页：净利润为三亿元。\n\nNet profit was 300 million."]
    )
    doc = parse_file(path, ingest)
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert doc.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert doc.title == "mixed"  # no metadata title, no heading: the file stem
    check_offsets(doc)
    assert "international expansion" in doc.pages[0].text  # hyphenated line break joined
    assert "inter-" not in doc.pages[0].text
    zh_page = doc.pages[1].text
    assert ZH in zh_page  # the wrapped Chinese lines come back joined, without spaces
    assert not HAN_SPACE.search(zh_page)
    assert zh_page.count(ZH) == 2 and "\n\n" in zh_page  # two paragraphs
    assert "净利润为三亿元" in doc.pages[2].text and "Net profit was 300 million." in doc.pages[2].text
    assert all(not p.ocr for p in doc.pages)


def _two_column_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((56, 70), "Two Column Study", fontsize=22, fontname="hebo")
    left = " ".join(f"Left column sentence number {i} talks about apples." for i in range(1, 13))
    right = " ".join(f"Right column sentence number {i} talks about oranges." for i in range(1, 13))
    # The right column is written first, so content-stream order is wrong on purpose.
    page.insert_textbox(pymupdf.Rect(310, 100, 540, 700), right, fontsize=10, fontname="helv")
    page.insert_textbox(pymupdf.Rect(56, 100, 286, 700), left, fontsize=10, fontname="helv")
    doc.save(str(path))
    return path


def test_two_column_page_reads_left_column_then_right(tmp_path: Path, ingest: IngestSettings) -> None:
    doc = parse_file(_two_column_pdf(tmp_path / "cols.pdf"), ingest)
    text = doc.pages[0].text
    check_offsets(doc)
    assert text.index("Two Column Study") < text.index("Left column sentence number 1 ")
    assert text.index("number 12 talks about apples") < text.index("Right column sentence number 1 ")
    # Each column is continuous: all left sentences before any right one, in order.
    lefts = [text.index(f"Left column sentence number {i} ") for i in range(1, 13)]
    assert lefts == sorted(lefts)
    heading = doc.pages[0].blocks[0]
    assert heading.text == "Two Column Study" and heading.heading_level == 1
    assert doc.title == "Two Column Study"


def test_three_columns_read_in_order(tmp_path: Path, ingest: IngestSettings) -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(56, 40, 540, 70), "A wide introduction line spans all three columns here.")
    words = ["apples", "pears", "plums"]
    for k in (2, 0, 1):  # written out of order on purpose
        x0 = 56 + k * 165
        body = " ".join(f"Column {k + 1} sentence {i} is about {words[k]}." for i in range(1, 9))
        page.insert_textbox(pymupdf.Rect(x0, 90, x0 + 150, 700), body, fontsize=9)
    path = tmp_path / "three.pdf"
    doc.save(str(path))
    text = parse_file(path, ingest).pages[0].text
    starts = [text.index(f"Column {k} sentence 1 ") for k in (1, 2, 3)]
    ends = [text.index(f"Column {k} sentence 8 ") for k in (1, 2, 3)]
    assert text.index("A wide introduction") < starts[0] < ends[0] < starts[1] < ends[1] < starts[2] < ends[2]


def test_same_row_fragments_join_and_fake_bold_is_deduplicated() -> None:
    lines = [
        Line(56, 100, 120, 110, "Net sales", 10),
        Line(300, 100, 340, 110, "81,797", 10),
        Line(56.4, 100.2, 120.4, 110.2, "Net sales", 10),  # printed twice for a bold look
        Line(56, 120, 90, 130, "营业收入", 10),
        Line(91, 120, 120, 130, "增长", 10),  # touching CJK fragments: no space
    ]
    assert [ln.text for ln in reading_order(lines)] == ["Net sales 81,797", "营业收入增长"]


def _unruled_pdf(tmp_path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(56, 60, 540, 100), "Results of operations for the year were as follows.")
    rows = [
        ("", "2023", "2022"),
        ("Net sales", "1,200", "950"),
        ("Cost of sales", "(700)", "(610)"),
        ("净利润", "500", "340"),
    ]
    for i, (label, a, b) in enumerate(rows):
        y = 120 + i * 14
        page.insert_text((56, y), label, fontsize=10, fontname="china-s" if label == "净利润" else "helv")
        page.insert_text((400, y), a, fontsize=10)
        page.insert_text((480, y), b, fontsize=10)
    page.insert_textbox(pymupdf.Rect(56, 190, 540, 240), "Margins improved because costs fell faster than sales.")
    path = tmp_path / "unruled.pdf"
    doc.save(str(path))
    return path


def test_unruled_table_of_numbers_becomes_markdown(tmp_path: Path, ingest: IngestSettings) -> None:
    parsed = parse_file(_unruled_pdf(tmp_path), ingest).pages[0]
    assert len(parsed.tables) == 1
    assert parsed.tables[0].markdown == (
        "|  | 2023 | 2022 |\n|---|---|---|\n| Net sales | 1,200 | 950 |\n| Cost of sales | (700) | (610) |\n"
        "| 净利润 | 500 | 340 |"
    )
    assert [b.kind for b in parsed.blocks] == ["text", "table", "text"]
    assert parsed.text.endswith("\n\nMargins improved because costs fell faster than sales.")


def test_unruled_rows_stay_one_per_line_with_tables_off(tmp_path: Path) -> None:
    parsed = parse_file(_unruled_pdf(tmp_path), IngestSettings(tables=False)).pages[0]
    block = next(b for b in parsed.blocks if "Net sales" in b.text)
    assert block.text == "2023 2022\nNet sales 1,200 950\nCost of sales (700) (610)\n净利润 500 340"
    assert parsed.text.startswith("Results of operations for the year were as follows.\n\n2023 2022")


def test_label_value_rows_are_not_columns() -> None:
    # A label column beside short numbers is a table-like layout, not two text columns.
    lines = []
    for i in range(10):
        y = 100 + i * 14
        lines.append(Line(56, y, 200, y + 10, f"Revenue line item {i}", 10))
        lines.append(Line(420, y, 450, y + 10, f"{i},000", 10))
    assert find_gutter(lines) is None
    ordered = reading_order(lines)
    assert ordered[0].text == "Revenue line item 0 0,000"


def _report_pdf(path: Path, pages: int = 4) -> Path:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=595, height=842)
        page.insert_text((56, 40), "ACME Holdings Annual Report 2023", fontsize=9)
        page.insert_text((280, 810), f"Page {n} of {pages}", fontsize=9)
        y = 100
        if n == 1:
            page.insert_text((56, y), "Chapter One Overview", fontsize=20, fontname="hebo")
            y += 40
        page.insert_textbox(
            pymupdf.Rect(56, y, 540, y + 300),
            f"Body text of page {n}. The board met {n + 3} times during the year and approved the budget.",
            fontsize=11,
        )
        if n == 2:
            page.insert_text((56, y + 120), "Risk Factors", fontsize=15, fontname="hebo")
            page.insert_textbox(pymupdf.Rect(56, y + 130, 540, y + 300), "Market risk is material.", fontsize=11)
    doc.save(str(path))
    return path


def test_running_header_footer_removed_and_kept_as_metadata(tmp_path: Path, ingest: IngestSettings) -> None:
    doc = parse_file(_report_pdf(tmp_path / "report.pdf"), ingest)
    check_offsets(doc)
    for page in doc.pages:
        assert "ACME Holdings" not in page.text
        assert f"Page {page.number} of 4" not in page.text
        assert "ACME Holdings Annual Report 2023" in page.header
        assert f"Page {page.number} of 4" in page.header
        assert f"Body text of page {page.number}." in page.text


def test_headings_detected_with_levels(tmp_path: Path, ingest: IngestSettings) -> None:
    doc = parse_file(_report_pdf(tmp_path / "report.pdf"), ingest)
    first = doc.pages[0].blocks[0]
    assert first.text == "Chapter One Overview" and first.heading_level == 1
    risk = [b for b in doc.pages[1].blocks if b.text == "Risk Factors"]
    assert risk and risk[0].heading_level == 2
    body = [b for b in doc.pages[1].blocks if b.text.startswith("Body text")]
    assert body and body[0].heading_level == 0
    assert doc.title == "Chapter One Overview"


def _table_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((56, 80), "Segment results are shown below.", fontsize=11)
    rows = [
        ["Segment", "2023", "2022"],
        ["Cloud", "1,200", "950"],
        ["Devices", "800", "870"],
        ["Total", "2,000", "1,820"],
    ]
    x = [56, 250, 400, 540]
    y0, h = 100, 24
    for r in range(len(rows) + 1):
        page.draw_line((x[0], y0 + r * h), (x[-1], y0 + r * h), width=0.8)
    for c in x:
        page.draw_line((c, y0), (c, y0 + h * len(rows)), width=0.8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            page.insert_text((x[c] + 6, y0 + r * h + 16), cell, fontsize=10)
    page.insert_text((56, y0 + h * len(rows) + 40), "Cloud grew fastest.", fontsize=11)
    doc.save(str(path))
    return path


def test_ruled_table_becomes_markdown_block(tmp_path: Path, ingest: IngestSettings) -> None:
    doc = parse_file(_table_pdf(tmp_path / "table.pdf"), ingest)
    page = doc.pages[0]
    check_offsets(doc)
    assert len(page.tables) == 1
    table = page.tables[0]
    assert table.header == "| Segment | 2023 | 2022 |\n|---|---|---|"
    assert "| Cloud | 1,200 | 950 |" in table.markdown and "| Total | 2,000 | 1,820 |" in table.markdown
    blocks = [b for b in page.blocks if b.kind == "table"]
    assert len(blocks) == 1 and blocks[0].text == table.markdown
    # In reading order between the sentences, and its words are not repeated as loose text.
    assert page.text.index("Segment results") < blocks[0].char_start < page.text.index("Cloud grew fastest.")
    loose = page.text.replace(table.markdown, "")
    assert "Devices" not in loose and "1,820" not in loose


def test_tables_off_keeps_words_as_text(tmp_path: Path) -> None:
    doc = parse_file(_table_pdf(tmp_path / "table.pdf"), IngestSettings(tables=False))
    assert not doc.pages[0].tables and "Devices" in doc.pages[0].text


def test_supported_extensions() -> None:
    assert {".pdf", ".txt", ".md", ".html", ".htm", ".docx", ".epub"} <= supported_extensions()


def test_real_chinese_bench_page_has_no_spaces_between_han(bench_dir: Path, ingest: IngestSettings) -> None:
    path = bench_dir / "docs" / "cmrc2018_zhwiki_vol01.pdf"
    if not path.is_file():
        pytest.skip("cmrc2018_zhwiki_vol01.pdf is not in the bench folder")
    doc = parse_file(path, ingest)
    assert len(doc.pages) >= 2
    check_offsets(doc)
    text = doc.pages[1].text
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) > 300
    assert not HAN_SPACE.search(text)
    assert any(b.heading_level > 0 for b in doc.pages[1].blocks)


def test_parse_file_runs_in_worker_processes(tmp_path: Path, ingest: IngestSettings) -> None:
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    paths = [make_pdf(tmp_path / f"w{i}.pdf", [f"Worker document {i}.", ZH]) for i in range(2)]
    assert pickle.loads(pickle.dumps(parse_file)) is parse_file
    with ProcessPoolExecutor(max_workers=2) as pool:
        docs = list(pool.map(parse_file, paths, [ingest] * 2))
    assert [d.pages[0].text for d in docs] == ["Worker document 0.", "Worker document 1."]
    assert docs[1].pages[1].text == ZH
