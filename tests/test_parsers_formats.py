"""Formats besides PDF (.txt, .md, .html, .docx, .epub), and OCR of a scanned PDF page."""

from __future__ import annotations

import hashlib
import re
import time
import zipfile
from pathlib import Path

import pymupdf
import pytest

from ingest.parsers import parse_file
from ingest.parsers.sections import PAGE_CHARS
from ingest.parsers.textclean import clean_line, text_quality
from rag.records import ParsedDocument
from rag.settings import IngestSettings

HAN_SPACE = re.compile(r"[\u4e00-\u9fff] +[\u4e00-\u9fff]")


def check(doc: ParsedDocument, path: Path) -> None:
    assert doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.number for p in doc.pages] == list(range(1, len(doc.pages) + 1))
    for page in doc.pages:
        for block in page.blocks:
            assert page.text[block.char_start : block.char_end] == block.text


def test_text_form_feeds_are_pages(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(
        "Page one line one\ncontinues here.\n\nSecond para.\fPage two text.\f第三页的内容\n继续说明。\n",
        encoding="utf-8",
    )
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert [p.text for p in doc.pages] == [
        "Page one line one continues here.\n\nSecond para.",
        "Page two text.",
        "第三页的内容继续说明。",
    ]
    assert doc.metadata["page_unit"] == "page" and doc.title == "notes"


def test_text_without_breaks_is_split_at_paragraphs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(12)]
    path = tmp_path / "long.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert len(doc.pages) > 3
    for page in doc.pages:
        assert len(page.text) <= PAGE_CHARS + 10
        assert page.text.startswith("Paragraph ")  # pages start at paragraph boundaries


def test_gbk_text_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "gbk.txt"
    path.write_bytes("公司营业收入增长。".encode("gbk"))
    assert parse_file(path, IngestSettings()).pages[0].text == "公司营业收入增长。"


def test_markdown_sections_headings_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "# User Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Details\n\nMore\ndetail.\n\n"
        "## Results\n\n| Year | Sales |\n|---|---|\n| 2023 | 10 |\n| 2022 | 8 |\n\n```\ncode  stays\n```\n",
        encoding="utf-8",
    )
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert doc.title == "User Guide"
    assert [p.blocks[0].text for p in doc.pages] == ["User Guide", "Install", "Results"]
    assert doc.pages[0].blocks[0].heading_level == 1 and doc.pages[1].blocks[0].heading_level == 2
    details = [b for b in doc.pages[1].blocks if b.text == "Details"]
    assert details and details[0].heading_level == 3
    assert "More detail." in doc.pages[1].text
    results = doc.pages[2]
    assert results.tables and results.tables[0].header == "| Year | Sales |\n|---|---|"
    assert "| 2023 | 10 |" in results.text and "code  stays" in results.text
    assert [b.kind for b in results.blocks] == ["text", "table", "text"]


def test_html_drops_scripts_keeps_headings_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Quarterly Note</title><style>p {color: red}</style></head><body>"
        "<script>var secret = 'do not index';</script>"
        "<h1>Overview</h1><p>Revenue <b>rose</b> by 5%.</p><p>中文 内容\n在这里。</p>"
        "<h2>Numbers</h2><table><tr><th>Item</th><th>Value</th></tr><tr><td>Cash</td><td>12</td></tr></table>"
        "<h3>Notes</h3><ul><li>First note</li><li>Second note</li></ul></body></html>",
        encoding="utf-8",
    )
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert doc.title == "Quarterly Note"
    text = "\n".join(p.text for p in doc.pages)
    assert "secret" not in text and "color" not in text
    assert len(doc.pages) == 2  # h1 and h2 start sections
    assert doc.pages[0].blocks[0].text == "Overview" and doc.pages[0].blocks[0].heading_level == 1
    assert "Revenue rose by 5%." in doc.pages[0].text
    assert "中文内容在这里。" in doc.pages[0].text
    assert doc.pages[1].tables[0].markdown == "| Item | Value |\n|---|---|\n| Cash | 12 |"
    notes = [b for b in doc.pages[1].blocks if b.text == "Notes"]
    assert notes and notes[0].heading_level == 3
    assert "First note\n\nSecond note" in doc.pages[1].text


def test_html_of_markup_without_text_is_refused_quickly_and_any_text_still_parses(tmp_path: Path) -> None:
    """Regression (issue 17): 60 MB of empty <div>s took the tag-by-tag parser about a minute to find no text."""
    from rag.errors import EmptyDocument

    empty = tmp_path / "empty.html"
    empty.write_text("<html><body>" + "<div><span></span></div>\n" * 400_000 + "</body></html>", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(EmptyDocument):
        parse_file(empty, IngestSettings())
    assert time.perf_counter() - start < 2  # 10 MB: 6-16 s through the parser
    for html, text in [
        ("Bare text before any tag<div></div>", "Bare text before any tag"),
        ('<div title="a > b"></div><p>&#65;pples grow.</p>', "Apples grow."),
    ]:
        path = tmp_path / "some.html"
        path.write_text(html, encoding="utf-8")
        assert text in parse_file(path, IngestSettings()).pages[0].text


def test_docx_page_breaks_headings_tables(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "Board Minutes"
    d.add_heading("Attendance", level=1)
    d.add_paragraph("All directors attended the meeting.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Name", "Role"
    table.cell(1, 0).text, table.cell(1, 1).text = "张三", "董事长"
    d.add_page_break()
    d.add_heading("Decisions", level=2)
    d.add_paragraph("公司决定增加研发投入。")
    path = tmp_path / "minutes.docx"
    d.save(str(path))
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert doc.title == "Board Minutes" and doc.metadata["page_unit"] == "page"
    assert len(doc.pages) == 2
    first, second = doc.pages
    assert first.blocks[0].text == "Attendance" and first.blocks[0].heading_level == 1
    assert first.tables[0].markdown == "| Name | Role |\n|---|---|\n| 张三 | 董事长 |"
    assert second.blocks[0].text == "Decisions" and second.blocks[0].heading_level == 2
    assert "公司决定增加研发投入。" in second.text


def test_docx_rendered_page_breaks_are_pages(tmp_path: Path) -> None:
    import docx
    from docx.oxml import OxmlElement

    d = docx.Document()
    d.add_paragraph("Page one text.")
    d.add_page_break()  # explicit break ...
    para = d.add_paragraph()
    para.add_run()._r.append(OxmlElement("w:lastRenderedPageBreak"))  # ... and Word's record of it: one boundary
    para.add_run("Page two starts here and")
    run = para.add_run()
    run._r.append(OxmlElement("w:lastRenderedPageBreak"))  # Word laid the rest out on page three
    run._r.append(OxmlElement("w:t"))
    run._r[-1].text = " continues on page three."
    path = tmp_path / "rendered.docx"
    d.save(str(path))
    doc = parse_file(path, IngestSettings())
    assert [p.text for p in doc.pages] == ["Page one text.", "Page two starts here and", "continues on page three."]


def test_docx_without_breaks_splits_at_heading_1(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    for name in ("Alpha", "Beta"):
        d.add_heading(name, level=1)
        d.add_heading(f"{name} detail", level=2)
        d.add_paragraph(f"Text about {name}.")
    path = tmp_path / "sections.docx"
    d.save(str(path))
    doc = parse_file(path, IngestSettings())
    assert [p.blocks[0].text for p in doc.pages] == ["Alpha", "Beta"]
    assert doc.metadata["page_unit"] == "section"


def _epub(path: Path) -> Path:
    chapter = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>{t}</title>'
        "</head><body><h1>{t}</h1><p>{body}</p></body></html>"
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Small Book</dc:title></metadata>'
        '<manifest><item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="css" href="style.css" media-type="text/css"/></manifest>'
        '<spine><itemref idref="c2"/><itemref idref="c1"/></spine></package>'
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
        "</container>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", container)
        zf.writestr("OEBPS/content.opf", opf)
        zf.writestr("OEBPS/style.css", "p { margin: 0 }")
        zf.writestr("OEBPS/text/one.xhtml", chapter.format(t="Chapter One", body="The river was wide."))
        zf.writestr("OEBPS/text/two.xhtml", chapter.format(t="序章", body="故事从这里开始。"))
    return path


def test_epub_chapters_in_spine_order(tmp_path: Path) -> None:
    path = _epub(tmp_path / "book.epub")
    doc = parse_file(path, IngestSettings())
    check(doc, path)
    assert doc.title == "A Small Book" and doc.metadata["page_unit"] == "chapter"
    assert [p.blocks[0].text for p in doc.pages] == ["序章", "Chapter One"]
    assert doc.pages[0].blocks[0].heading_level == 1
    assert "故事从这里开始。" in doc.pages[0].text and "The river was wide." in doc.pages[1].text


def test_text_quality_flags_garbled_layers() -> None:
    assert text_quality("\ue001\ue002\ue003\ue004\ue005\ue006 abc").garbled
    assert text_quality("(cid:12)(cid:13)(cid:14)(cid:15)(cid:16)(cid:17) x").garbled
    assert text_quality("!#$%&'*+,/;<=>?@[]^`{|}~" * 4).garbled
    assert not text_quality("目录 " + "." * 80 + " 31\nRevenue grew by 5% in 2023.").garbled
    assert text_quality("  ").empty
    assert clean_line("⽣产 经营\u00a0 ﬁnance") == "生产经营 finance"


_GARBLING_CMAP = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Garbled def
/CMapType 2 def
1 begincodespacerange
<00> <FF>
endcodespacerange
1 beginbfrange
<20> <7E> <E020>
endbfrange
endcmap
CMapName currentdict /CMapResource defineresource pop
end
end
"""


def _ocr_pdf(path: Path) -> Path:
    """Page 1: only an image of text (a scan). Page 2: text drawn right but extracted as private-use glyphs."""
    src = pymupdf.open()
    page = src.new_page(width=420, height=200)
    page.insert_text((20, 50), "Invoice total amount due", fontsize=18)
    page.insert_text((20, 100), "营业收入增长百分之二十", fontsize=18, fontname="china-s")
    page.insert_text((20, 150), "Payment received in March", fontsize=18)
    pix = page.get_pixmap(dpi=150)
    out = pymupdf.open()
    scan = out.new_page(width=420, height=200)
    scan.insert_image(scan.rect, pixmap=pix)
    garbled = out.new_page(width=420, height=200)
    garbled.insert_text((20, 60), "Quarterly revenue rose sharply", fontsize=18, fontname="helv")
    font_xref = garbled.get_fonts()[0][0]
    cmap = out.get_new_xref()
    out.update_object(cmap, "<<>>")
    out.update_stream(cmap, _GARBLING_CMAP)
    out.xref_set_key(font_xref, "ToUnicode", f"{cmap} 0 R")  # every code maps into U+E000..U+F8FF
    out.save(str(path))
    return path


@pytest.mark.slow
def test_scanned_and_garbled_pages_are_ocrd_with_bundled_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from rapidocr.utils.download_file import DownloadFile

    import ingest.ocr

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("OCR tried to reach the network")

    # A fresh engine, built with no network and no download helper: the bundled files are enough.
    monkeypatch.setattr(ingest.ocr, "_engine", None)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(DownloadFile, "run", classmethod(no_network))
    path = _ocr_pdf(tmp_path / "scan.pdf")
    assert "\ue051" in pymupdf.open(str(path))[1].get_text()  # the text layer really is garbled
    doc = parse_file(path, IngestSettings())
    scan, garbled = doc.pages
    assert scan.ocr and garbled.ocr and doc.metadata["ocr_pages"] == [1, 2]
    for words in ("Invoice total amount due", "营业收入增长百分之二十", "Payment received in March"):
        assert words in scan.text
    assert not HAN_SPACE.search(scan.text)
    assert scan.blocks[0].text == "Invoice total amount due"
    assert "Quarterly revenue rose sharply" in garbled.text
    assert not re.search("[\ue000-\uf8ff]", garbled.text)


def test_ocr_off_reports_pages_without_usable_text(tmp_path: Path) -> None:
    from rag.errors import EmptyDocument

    with pytest.raises(EmptyDocument, match="OCR is off"):
        parse_file(_ocr_pdf(tmp_path / "scan.pdf"), IngestSettings(ocr=False))


def test_ocr_models_are_the_bundled_files() -> None:
    import rapidocr

    from ingest.ocr import model_files

    bundled = Path(rapidocr.__file__).parent / "models"
    files = model_files()
    assert set(files) == {"Det", "Cls", "Rec"}
    assert all(p.parent == bundled and p.is_file() for p in files.values())
