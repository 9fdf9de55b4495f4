"""Bad input: every broken file gives one clear ParseError line naming the file, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest
from pdfgen import make_encrypted_pdf, make_pdf

from ingest.parsers import parse_file
from rag.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    ParseError,
    UnsupportedFormat,
)
from rag.settings import IngestSettings

PAGES = ["First page text about revenue.", "Second page text about profit.", "Third page text about cash."]


def assert_one_line(err: ParseError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message
    assert message.startswith(str(path))


def test_encrypted_without_password(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "locked.pdf", text="secret revenue figure", password="pw")
    with pytest.raises(EncryptedDocument, match="encrypted PDF; give its password") as info:
        parse_file(path, IngestSettings())
    assert_one_line(info.value, path)


def test_encrypted_with_right_and_wrong_password(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "locked.pdf", text="secret revenue figure", password="pw")
    doc = parse_file(path, IngestSettings(), password="pw")
    assert "secret revenue figure" in doc.pages[0].text
    with pytest.raises(EncryptedDocument, match="password given is wrong") as info:
        parse_file(path, IngestSettings(), password="nope")
    assert_one_line(info.value, path)


def test_non_pdf_named_pdf(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("just some text, not a PDF at all")
    with pytest.raises(CorruptDocument, match=r"not a PDF \(starts with 'just some text, ") as info:
        parse_file(path, IngestSettings())
    assert_one_line(info.value, path)


def test_zero_byte_file(tmp_path: Path) -> None:
    for name in ("empty.pdf", "empty.txt", "empty.docx"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(EmptyDocument, match="empty file") as info:
            parse_file(path, IngestSettings())
        assert_one_line(info.value, path)


def test_zero_page_pdf(tmp_path: Path) -> None:
    path = tmp_path / "nopages.pdf"
    path.write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    with pytest.raises(EmptyDocument, match="no pages"):
        parse_file(path, IngestSettings())


def test_truncated_pdf(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "full.pdf", PAGES).read_bytes()
    badly = tmp_path / "cut.pdf"
    badly.write_bytes(data[: len(data) * 3 // 10])
    with pytest.raises(CorruptDocument, match="damaged or truncated") as info:
        parse_file(badly, IngestSettings())
    assert_one_line(info.value, badly)
    # Cut near the end: MuPDF repairs it and what remains is read.
    mostly = tmp_path / "mostly.pdf"
    mostly.write_bytes(data[: len(data) * 9 // 10])
    doc = parse_file(mostly, IngestSettings())
    assert doc.metadata["repaired"] and "First page text" in doc.pages[0].text


def test_garbage_after_pdf_header(tmp_path: Path) -> None:
    path = tmp_path / "junk.pdf"
    path.write_bytes(b"%PDF-1.7\n" + b"garbage" * 100)
    with pytest.raises(CorruptDocument, match="damaged or truncated PDF") as info:
        parse_file(path, IngestSettings())
    assert_one_line(info.value, path)


def test_broken_xref_is_repaired(tmp_path: Path) -> None:
    data = bytearray(make_pdf(tmp_path / "ok.pdf", PAGES).read_bytes())
    at = data.rfind(b"startxref") + len(b"startxref")
    while chr(data[at]).isspace():
        at += 1
    while chr(data[at]).isdigit():  # point the xref offset at nonsense
        data[at] = ord("9")
        at += 1
    path = tmp_path / "xref.pdf"
    path.write_bytes(bytes(data))
    doc = parse_file(path, IngestSettings())
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert "Third page text about cash." in doc.pages[2].text
    assert doc.metadata["repaired"] is True


def test_too_many_pages(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "long.pdf", PAGES)
    with pytest.raises(DocumentTooLarge, match=r"3 pages, over the limit of 2 \(ingest.max_pages\)") as info:
        parse_file(path, IngestSettings(max_pages=2))
    assert_one_line(info.value, path)


def test_file_over_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    path.write_bytes(b"%PDF-1.7\n" + b"0" * (1024 * 1024 + 10))
    with pytest.raises(DocumentTooLarge, match=r"over the limit of 1 MB"):
        parse_file(path, IngestSettings(max_file_mb=1))


def test_enormous_page(tmp_path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page(width=20000, height=300).insert_text((50, 100), "a very wide page")
    path = tmp_path / "wide.pdf"
    doc.save(str(path))
    with pytest.raises(DocumentTooLarge, match="page 1 is 278 x 4 inches, over 200 inches a side"):
        parse_file(path, IngestSettings())


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UnsupportedFormat, match=r"unsupported file type \.xlsx; supported: .docx"):
        parse_file(path, IngestSettings())


def test_pdf_content_without_pdf_extension_is_parsed(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "ok.pdf", PAGES).read_bytes()
    path = tmp_path / "download"
    path.write_bytes(data)
    assert parse_file(path, IngestSettings()).pages[1].text == PAGES[1]


def test_broken_docx_and_epub(tmp_path: Path) -> None:
    docx = tmp_path / "broken.docx"
    docx.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with pytest.raises(CorruptDocument, match="broken.docx"):
        parse_file(docx, IngestSettings())
    epub = tmp_path / "broken.epub"
    epub.write_bytes(b"this is not a zip")
    with pytest.raises(CorruptDocument, match="damaged EPUB"):
        parse_file(epub, IngestSettings())
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\x00\x01\x02" * 50)
    with pytest.raises(CorruptDocument, match="binary content"):
        parse_file(binary, IngestSettings())


# --- magic bytes win over the extension (issue 17, item 6) ---------------------------------------


@pytest.mark.parametrize("name", ["report.txt", "notes.md", "page.html", "letter.docx", "book.epub"])
def test_pdf_under_another_extension_is_parsed_as_pdf(tmp_path: Path, name: str) -> None:
    data = make_pdf(tmp_path / "ok.pdf", PAGES).read_bytes()
    path = tmp_path / name
    path.write_bytes(data)
    doc = parse_file(path, IngestSettings())
    assert doc.metadata["format"] == "pdf"
    assert [p.text for p in doc.pages] == PAGES


def _small_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("A Word file under another name.")
    document.save(str(path))
    return path


def _small_epub(path: Path) -> Path:
    import zipfile

    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="book.opf" media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><manifest>'
        '<item id="c" href="c.xhtml" media-type="application/xhtml+xml"/></manifest><spine><itemref idref="c"/>'
        "</spine></package>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", container)
        zf.writestr("book.opf", opf)
        zf.writestr("c.xhtml", "<html><body><p>An EPUB under another name.</p></body></html>")
    return path


@pytest.mark.parametrize("name", ["report.txt", "download", "notes.md", "letter.epub", "paper.pdf"])
def test_word_file_under_another_name_is_parsed_as_docx(tmp_path: Path, name: str) -> None:
    """Regression (issue 17): a .docx renamed .txt was refused as binary (a ZIP archive); magic bytes win."""
    data = _small_docx(tmp_path / "real.docx").read_bytes()
    path = tmp_path / name
    path.write_bytes(data)
    doc = parse_file(path, IngestSettings())
    assert doc.metadata["format"] == "docx" and "A Word file under another name." in doc.pages[0].text


@pytest.mark.parametrize("name", ["book.txt", "book", "book.html", "book.docx"])
def test_epub_under_another_name_is_parsed_as_epub(tmp_path: Path, name: str) -> None:
    data = _small_epub(tmp_path / "real.epub").read_bytes()
    path = tmp_path / name
    path.write_bytes(data)
    doc = parse_file(path, IngestSettings())
    assert doc.metadata["format"] == "epub" and "An EPUB under another name." in doc.pages[0].text


@pytest.mark.parametrize(
    ("name", "data", "what"),
    [
        ("photo.txt", b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" * 20, "a PNG image"),
        ("archive.md", b"PK\x03\x04" + b"word/document.xml" * 20, "a ZIP archive"),
        ("page.html", bytes(range(1, 32)) * 20, "starts with"),
    ],
)
def test_binary_content_under_a_text_extension_is_refused(tmp_path: Path, name: str, data: bytes, what: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CorruptDocument, match=rf"binary content in a \{path.suffix} file \({what}") as info:
        parse_file(path, IngestSettings())
    assert_one_line(info.value, path)


def test_text_that_mentions_the_pdf_header_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "howto.txt"
    path.write_text("A PDF file begins with the bytes %PDF-1.7 and ends with %%EOF.\n", encoding="utf-8")
    assert parse_file(path, IngestSettings()).metadata["format"] == "text"
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("\ufeff年度报告：营业收入增长。".encode("utf-16-le"))
    assert "营业收入" in parse_file(utf16, IngestSettings()).pages[0].text


# --- a truncated PDF says so (issue 17, item 6) ------------------------------------------------------


def test_truncated_pdf_is_not_reported_as_having_no_pages(tmp_path: Path) -> None:
    # With object streams the page tree sits near the end: most cuts leave MuPDF a "repaired" file with
    # zero pages (once reported as "PDF has no pages") or one whose page count raises.
    doc = pymupdf.open()
    for i in range(10):
        doc.new_page().insert_text((72, 72), f"Page {i} text about revenue and profit " * 3)
    full = tmp_path / "full.pdf"
    doc.save(str(full), garbage=4, deflate=True, use_objstms=1)
    doc.close()
    data = full.read_bytes()
    refused = 0
    for tenth in range(1, 9):
        cut = tmp_path / f"cut{tenth}.pdf"
        cut.write_bytes(data[: len(data) * tenth // 10])
        try:
            parse_file(cut, IngestSettings())
        except CorruptDocument as exc:
            assert "truncated" in str(exc)
            assert_one_line(exc, cut)
            refused += 1
    assert refused >= 6
