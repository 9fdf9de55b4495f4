"""Decompression and work bombs (issue 17, item 2): small on disk, gigabytes inflated or billions of draws.

Each is built here (without ever inflating it: one full-flushed deflate block, repeated) and given to
the real parsers; each must be refused with one line naming the limit and its setting, in seconds
and with bounded memory (measured in a child process), before it is inflated past the limit.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest.parsers import parse_file
from rag.errors import CorruptDocument, DocumentTooLarge
from rag.settings import IngestSettings

MB = 1 << 20
REPO = Path(__file__).resolve().parents[1]
NO_OCR = IngestSettings(ocr=False)


# --- building bombs ---------------------------------------------------------------------------------


def deflate_repeat(unit: bytes, times: int, prefix: bytes = b"") -> bytes:
    """Raw deflate of `prefix + unit * times`, made without compressing it all: after a full flush
    the compressor starts afresh, so the block for `unit` is the same bytes every time."""
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = first.compress(prefix) + first.flush(zlib.Z_FULL_FLUSH) if prefix else b""
    again = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = again.compress(unit) + again.flush(zlib.Z_FULL_FLUSH)
    return head + block * times + b"\x03\x00"  # the final block: empty, fixed Huffman codes


def crc_repeat(unit: bytes, times: int, prefix: bytes = b"") -> int:
    crc = zlib.crc32(prefix)
    for _ in range(times):
        crc = zlib.crc32(unit, crc)
    return crc


@dataclass
class Member:
    name: str
    data: bytes  # as stored in the archive
    size: int  # what the headers declare it inflates to
    crc: int
    method: int = zipfile.ZIP_DEFLATED


def member(name: str, content: bytes) -> Member:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Member(name, c.compress(content) + c.flush(), len(content), zlib.crc32(content))


def write_zip(path: Path, members: list[Member]) -> Path:
    """A ZIP written by hand, so a member's declared size can be anything (zipfile would correct it)."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m.name.encode()
        offset = len(out)
        fields = (20, 0, m.method, 0, 0x21, m.crc, len(m.data), m.size, len(name))
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + name + m.data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, offset) + name
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def docx_members() -> list[Member]:
    """The parts of a real one-paragraph .docx made by python-docx."""
    import docx

    document = docx.Document()
    document.add_paragraph("A small report about revenue.")
    buf = io.BytesIO()
    document.save(buf)
    with zipfile.ZipFile(buf) as zf:
        return [member(i.filename, zf.read(i)) for i in zf.infolist()]


def docx_with_bomb(path: Path, inflated_mb: int, declared: int | None = None) -> Path:
    """A real .docx whose word/document.xml is XML then `inflated_mb` MB of spaces; `declared` lies."""
    prefix = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    unit = b" " * MB
    parts = [m for m in docx_members() if m.name != "word/document.xml"]
    size = len(prefix) + inflated_mb * MB
    crc = crc_repeat(unit, inflated_mb, prefix) if declared is None else 0
    bomb = Member("word/document.xml", deflate_repeat(unit, inflated_mb, prefix), declared or size, crc)
    return write_zip(path, [*parts, bomb])


CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>'
)
CHAPTER = '<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>{t}</h1><p>{body}</p></body></html>'


def epub(path: Path, chapters: list[Member], spine: list[str]) -> Path:
    items = "".join(
        f'<item id="c{i}" href="{m.name}" media-type="application/xhtml+xml"/>' for i, m in enumerate(chapters)
    )
    ids = {m.name: f"c{i}" for i, m in enumerate(chapters)}
    refs = "".join(f'<itemref idref="{ids[name]}"/>' for name in spine)
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Bomb</dc:title></metadata>'
        f"<manifest>{items}</manifest><spine>{refs}</spine></package>"
    )
    head = [member("mimetype", b"application/epub+zip"), member("META-INF/container.xml", CONTAINER.encode())]
    return write_zip(path, [*head, member("content.opf", opf.encode()), *chapters])


def text_chapter(name: str) -> Member:
    return member(name, CHAPTER.format(t="Chapter One", body="The river was wide and slow.").encode())


def write_pdf(path: Path, objects: list[bytes]) -> Path:
    """A PDF of `objects` (object 1 is the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def stream(data: bytes, extra: bytes = b"", *, zlib_data: bool = False) -> bytes:
    if not zlib_data:
        data, extra = zlib.compress(data), extra + b" /Filter /FlateDecode"
    elif b"/Filter" not in extra:
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


PDF_HEAD = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /X 6 0 R >> "
    b"/Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    stream(b"BT /F1 12 Tf 72 720 Td (Forms drawn on this page) Tj ET /X Do"),
]
FORM = b" /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << %s >>"


def nested_forms_pdf(path: Path, depth: int, fan: int, leaf: bytes = b"BT /F1 9 Tf 72 700 Td (leaf) Tj ET") -> Path:
    """Form k draws form k+1 `fan` times, `depth` levels: fan ** depth draws of the leaf."""
    forms = []
    for k in range(depth + 1):
        if k < depth:
            forms.append(stream(b"/X Do " * fan, FORM % (b"/XObject << /X %d 0 R >>" % (7 + k))))
        else:
            forms.append(stream(leaf, FORM % b"/Font << /F1 4 0 R >>"))
    return write_pdf(path, [*PDF_HEAD, *forms])


def zlib_bomb(inflated_mb: int, prefix: bytes = b"") -> bytes:
    """A zlib stream of `prefix` and `inflated_mb` MB of spaces (its Adler-32 is wrong: nobody may
    inflate it to the end)."""
    return b"\x78\xda" + deflate_repeat(b" " * MB, inflated_mb, prefix) + struct.pack(">I", 1)


def flate_bomb_pdf(path: Path, inflated_mb: int) -> Path:
    """One page whose content stream is a line of text, then `inflated_mb` MB of spaces."""
    data = zlib_bomb(inflated_mb, b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET\n")
    return write_pdf(path, [*PDF_HEAD[:4], stream(data, zlib_data=True)])


# --- parsing in a child, to see its memory ----------------------------------------------------------

_CHILD = """
import json, sys, time
from pathlib import Path
from ingest.parsers import parse_file
from rag.errors import ParseError
from rag.settings import IngestSettings
settings = IngestSettings(**json.loads(sys.argv[2]))
start = time.perf_counter()
try:
    parse_file(Path(sys.argv[1]), settings)
    out = {"error": None, "message": ""}
except ParseError as exc:
    out = {"error": type(exc).__name__, "message": str(exc)}
out["seconds"] = time.perf_counter() - start
# VmHWM: this process's peak RSS (ru_maxrss would include the parent's, carried across fork + exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def parse_in_child(path: Path, **settings: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), json.dumps({"ocr": False, **settings})],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused_quickly(result: dict[str, Any], error: str, *words: str) -> None:
    assert result["error"] == error, result
    assert "\n" not in result["message"] and all(w in result["message"] for w in words), result
    assert result["seconds"] < 5, result
    assert result["peak_rss_mb"] < 400, result  # imports included; the bombs inflate to 1,200 MB


# --- DOCX -------------------------------------------------------------------------------------------


def test_docx_whose_document_xml_inflates_to_1_2_gb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Regression: a 2.9 MB .docx of a 1.2 GB document.xml took a worker to 4.9 GB and 205 s."""
    path = docx_with_bomb(tmp_path / "bomb.docx", 1200)
    assert path.stat().st_size < 3 * MB
    result = parse_in_child(path)  # default settings: max_inflated_mb = 1024
    assert_refused_quickly(
        result, "DocumentTooLarge", "word/document.xml", "1,200 MB", "1024 MB", "ingest.max_inflated_mb"
    )


def test_docx_with_a_lying_size_header_gains_nothing(tmp_path: Path) -> None:
    """The directory says document.xml is 2 KB; it inflates to 1.2 GB (ZipFile.read inflated it all: 2 GB, 13 s)."""
    path = docx_with_bomb(tmp_path / "liar.docx", 1200, declared=2048)
    assert_refused_quickly(parse_in_child(path), "CorruptDocument", "damaged package part word/document.xml", "CRC")


def test_docx_under_the_limit_still_parses_and_the_limit_is_a_setting(tmp_path: Path) -> None:
    path = docx_with_bomb(tmp_path / "padded.docx", 3)  # 3 MB of whitespace after the XML declaration...
    with pytest.raises(DocumentTooLarge, match=r"over the limit of 2 MB inflated \(ingest.max_inflated_mb\)"):
        parse_file(path, IngestSettings(max_inflated_mb=2))
    good = write_zip(tmp_path / "good.docx", docx_members())
    doc = parse_file(good, IngestSettings(max_inflated_mb=2))  # its ~800 KB of parts fit
    assert "A small report about revenue." in doc.pages[0].text


def test_docx_with_an_unexpected_compression_method_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bz.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as zf:
        for m in docx_members():
            zf.writestr(m.name, zlib.decompress(m.data, -15))
    with pytest.raises(CorruptDocument, match="compression method 12"):
        parse_file(path, NO_OCR)


# --- EPUB -------------------------------------------------------------------------------------------


def test_epub_listing_one_textless_chapter_300_times_reads_it_once(tmp_path: Path) -> None:
    """Regression: an 87 KB EPUB listing a 60 MB text-less chapter 300 times would parse for ~3 h."""
    unit = b"<div><span></span></div>\n" * (MB // 25)
    prefix = b"<html><body>"
    empty = Member(
        "empty.xhtml", deflate_repeat(unit, 60, prefix), len(prefix) + 60 * len(unit), crc_repeat(unit, 60, prefix)
    )
    path = epub(tmp_path / "loop.epub", [empty, text_chapter("one.xhtml")], ["empty.xhtml"] * 300 + ["one.xhtml"])
    assert path.stat().st_size < 200 * 1024
    start = time.perf_counter()
    doc = parse_file(path, NO_OCR)
    assert time.perf_counter() - start < 10  # read once, and markup without text is not parsed tag by tag
    assert doc.metadata["chapters"] == 2 and len(doc.pages) == 1
    assert "The river was wide" in doc.pages[0].text


def test_epub_whose_chapters_inflate_past_the_budget_is_refused_before_reading(tmp_path: Path) -> None:
    unit = b" " * MB
    chapters = [Member(f"c{i}.xhtml", deflate_repeat(unit, 4), 4 * MB, crc_repeat(unit, 4)) for i in range(4)]
    path = epub(tmp_path / "fat.epub", [text_chapter("one.xhtml"), *chapters], ["one.xhtml"])
    with pytest.raises(DocumentTooLarge, match=r"16 MB .* over the limit of 8 MB inflated \(ingest.max_inflated_mb\)"):
        parse_file(path, IngestSettings(max_inflated_mb=8))
    assert parse_file(path, IngestSettings(max_inflated_mb=32)).pages  # under a larger limit it parses


def test_epub_chapter_with_a_lying_size_header_is_refused(tmp_path: Path) -> None:
    liar = Member("liar.xhtml", deflate_repeat(b" " * MB, 1200, b"<html><body>"), 1024, 0)
    path = epub(tmp_path / "liar.epub", [liar, text_chapter("one.xhtml")], ["liar.xhtml", "one.xhtml"])
    start = time.perf_counter()
    with pytest.raises(CorruptDocument, match="damaged package part liar.xhtml"):
        parse_file(path, NO_OCR)
    assert time.perf_counter() - start < 5


# --- PDF --------------------------------------------------------------------------------------------


def test_pdf_of_nested_form_xobjects_is_refused_before_extraction(tmp_path: Path) -> None:
    """Regression: a 3 KB PDF of forms drawing forms (10 levels of 10 draws) parsed for ~400 s."""
    path = nested_forms_pdf(tmp_path / "nested.pdf", depth=10, fan=10)
    assert path.stat().st_size < 4096
    start = time.perf_counter()
    with pytest.raises(DocumentTooLarge, match=r"page 1 draws form XObjects 11,111,111,111 times .* 100,000 a page"):
        parse_file(path, NO_OCR)
    assert time.perf_counter() - start < 3


def test_pdf_with_real_form_xobjects_and_a_form_cycle_still_parses(tmp_path: Path) -> None:
    doc = parse_file(nested_forms_pdf(tmp_path / "forms.pdf", depth=2, fan=20), NO_OCR)  # 400 draws: fine
    assert "leaf" in doc.pages[0].text and "Forms drawn on this page" in doc.pages[0].text
    cycle = [*PDF_HEAD, stream(b"/X Do BT /F1 9 Tf 72 700 Td (inside) Tj ET", FORM % b"/XObject << /X 6 0 R >>")]
    doc = parse_file(write_pdf(tmp_path / "cycle.pdf", cycle), NO_OCR)  # a form that draws itself
    assert "inside" in doc.pages[0].text


def test_pdf_flate_bomb_is_refused_without_inflating_past_the_limit(tmp_path: Path) -> None:
    path = flate_bomb_pdf(tmp_path / "flate.pdf", 1200)  # 1.2 GB of content from a 1.2 MB file
    assert path.stat().st_size < 2 * MB
    result = parse_in_child(path, max_inflated_mb=16)
    assert_refused_quickly(
        result, "DocumentTooLarge", "page 1: content stream", "16 MB inflated", "ingest.max_inflated_mb"
    )


def test_pdf_font_program_bomb_is_refused_before_the_font_is_loaded(tmp_path: Path) -> None:
    font = b"<< /Type /Font /Subtype /TrueType /BaseFont /Bomb /FirstChar 32 /LastChar 126 /FontDescriptor 6 0 R >>"
    descriptor = (
        b"<< /Type /FontDescriptor /FontName /Bomb /Flags 32 /FontBBox [0 0 1000 1000] /ItalicAngle 0 "
        b"/Ascent 800 /Descent -200 /CapHeight 700 /StemV 80 /FontFile2 7 0 R >>"
    )
    page = stream(b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET")
    objects = [*PDF_HEAD[:3], font, page, descriptor, stream(zlib_bomb(48), zlib_data=True)]
    path = write_pdf(tmp_path / "font.pdf", objects)
    start = time.perf_counter()
    with pytest.raises(DocumentTooLarge, match=r"page 1: font stream FontFile2 \(object 7\) inflates past the limit"):
        parse_file(path, IngestSettings(ocr=False, max_inflated_mb=16))
    assert time.perf_counter() - start < 3


def objstm_bomb_pdf(path: Path, inflated_mb: int) -> Path:
    """The page object packed in an object stream that then holds `inflated_mb` MB of spaces (PDF 1.5
    object streams need a cross-reference stream, written here too)."""
    page = PDF_HEAD[2].replace(b"/XObject << /X 6 0 R >> ", b"").replace(b"5 0 R", b"6 0 R")
    objstm = zlib_bomb(inflated_mb, b"3 0 " + page)
    bodies = {
        1: PDF_HEAD[0],
        2: PDF_HEAD[1],
        4: PDF_HEAD[3],
        5: stream(objstm, b" /Type /ObjStm /N 1 /First 4", zlib_data=True),
        6: stream(b"BT /F1 12 Tf 72 720 Td (Packed page) Tj ET"),
    }
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in bodies.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    offsets[7] = len(out)
    rows = [struct.pack(">BIH", 0, 0, 65535)]
    for number in range(1, 8):
        packed = number == 3  # object 3 is the first (index 0) in object stream 5
        rows.append(struct.pack(">BIH", 2, 5, 0) if packed else struct.pack(">BIH", 1, offsets[number], 0))
    xref = stream(b"".join(rows), b" /Type /XRef /Size 8 /W [1 4 2] /Root 1 0 R", zlib_data=True).replace(
        b" /Filter /FlateDecode", b""
    )
    out += b"7 0 obj\n" + xref + b"\nendobj\nstartxref\n%d\n%%%%EOF\n" % offsets[7]
    path.write_bytes(bytes(out))
    return path


def test_pdf_object_stream_bomb_is_refused_before_the_page_tree_is_read(tmp_path: Path) -> None:
    path = objstm_bomb_pdf(tmp_path / "objstm.pdf", 48)
    small = objstm_bomb_pdf(tmp_path / "small.pdf", 1)  # the same file with 1 MB of padding parses
    assert "Packed page" in parse_file(small, NO_OCR).pages[0].text
    start = time.perf_counter()
    with pytest.raises(DocumentTooLarge, match=r"object stream 5 inflates past the limit of 16 MB inflated"):
        parse_file(path, IngestSettings(ocr=False, max_inflated_mb=16))
    assert time.perf_counter() - start < 3


def test_pdf_page_drawing_a_large_form_again_and_again_is_refused(tmp_path: Path) -> None:
    """Few draws, but each interprets 2 MB: 50 of them are 100 MB of content for one page."""
    form = stream(b"BT /F1 9 Tf 72 700 Td (big) Tj ET" + b" " * (2 * MB), FORM % b"/Font << /F1 4 0 R >>")
    page = stream(b"/X Do " * 50)
    path = write_pdf(tmp_path / "repeat.pdf", [*PDF_HEAD[:4], page, form])
    with pytest.raises(DocumentTooLarge, match=r"page 1 interprets 104,8\d\d,\d+ bytes .* limit of 32 MB inflated"):
        parse_file(path, IngestSettings(ocr=False, max_inflated_mb=32))
    assert parse_file(path, IngestSettings(ocr=False, max_inflated_mb=128)).pages[0].text


def test_a_row_of_thousands_of_fragments_is_laid_out_in_linear_time(tmp_path: Path) -> None:
    """Regression: rows were merged by rescanning the whole row for each fragment (20,000 on one row:
    minutes). 5,000 draws of one word at the same place make one such row."""
    path = nested_forms_pdf(tmp_path / "row.pdf", depth=1, fan=5000)
    start = time.perf_counter()
    doc = parse_file(path, NO_OCR)
    assert time.perf_counter() - start < 6  # ~20 s before
    assert "leaf" in doc.pages[0].text


# --- through `citeqa ingest` ------------------------------------------------------------------------


def test_bombs_in_a_batch_fail_alone_with_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import main

    folder = tmp_path / "inbox"
    folder.mkdir()
    docx_with_bomb(folder / "bomb.docx", 1200)
    nested_forms_pdf(folder / "nested.pdf", depth=10, fan=10)
    (folder / "notes.txt").write_text("Revenue grew by 12% in 2023.", encoding="utf-8")
    start = time.perf_counter()
    code = main(["ingest", str(folder), "--kb", "bombs", "--workers", "1", "--json", "--embedder", "fake"])
    assert time.perf_counter() - start < 30
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["added"] == 1
    failed = {Path(f["path"]).name: f["error"] for f in out["failed"]}
    assert set(failed) == {"bomb.docx", "nested.pdf"}
    assert "ingest.max_inflated_mb" in failed["bomb.docx"] and "100,000 a page" in failed["nested.pdf"]
    assert all("\n" not in e for e in failed.values())
