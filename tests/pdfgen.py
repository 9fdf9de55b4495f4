"""Make small real PDFs inside tests (PyMuPDF, with its built-in CJK font)."""

from __future__ import annotations

from pathlib import Path

import pymupdf

from rag.lang import cjk_ratio


def make_pdf(path: Path, pages: list[str], *, fontsize: float = 11, width: float = 595, height: float = 842) -> Path:
    """Write one page per string; paragraphs separated by blank lines; CJK text uses the 'china-s' font."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page(width=width, height=height)
        rect = pymupdf.Rect(56, 56, width - 56, height - 56)
        font = "china-s" if cjk_ratio(text) > 0 else "helv"
        page.insert_textbox(rect, text, fontname=font, fontsize=fontsize)
    doc.save(str(path))
    doc.close()
    return path


def make_encrypted_pdf(path: Path, text: str = "secret text", password: str = "pw") -> Path:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), text)
    doc.save(str(path), encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw=password + "-owner", user_pw=password)
    doc.close()
    return path
