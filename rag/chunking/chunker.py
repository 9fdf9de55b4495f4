"""The default chunker: a page's regions -> units -> packed pieces -> Chunks with ids."""

from __future__ import annotations

from rag.chunking.context import apply_headers
from rag.chunking.counting import TokenCounter
from rag.chunking.packing import Packer
from rag.chunking.regions import regions
from rag.chunking.splitting import sentence_spans
from rag.chunking.units import CountTokens, Unit
from rag.records import Chunk, Page, ParsedDocument
from rag.settings import ChunkingSettings

_SECTION_TITLE_MAX = 80


class SentenceChunker:
    """The default chunker; see the rag.chunking docstring for the rules."""

    def __init__(self, settings: ChunkingSettings, count_tokens: CountTokens, *, cache_size: int = 32_768) -> None:
        self.max_tokens = settings.max_tokens
        self.headers = settings.headers
        self.overlap_tokens = min(settings.overlap_tokens, settings.max_tokens // 2)
        self.min_tokens = min(settings.min_tokens, settings.max_tokens // 2)
        self.counter = TokenCounter(count_tokens, self.max_tokens, cache_size=cache_size)
        self._packer = Packer(self.counter, overlap_tokens=self.overlap_tokens, min_tokens=self.min_tokens)

    def count(self, text: str) -> int:
        """The embedder's token count for `text` as one passage (cached)."""
        return self.counter.count(text)

    def chunk(self, doc: ParsedDocument, doc_id: str) -> list[Chunk]:
        """Split `doc` into chunks with ids `f"{doc_id}-{ordinal:05d}"`."""
        sections: list[tuple[int, str]] = []  # heading stack: (level, title)
        out: list[Chunk] = []
        for page in doc.pages:
            units = self._page_units(page, sections)
            for piece in self._packer.merge_small(page, self._packer.pack(page, units)):
                text = piece.prefix + page.text[piece.start : piece.end]
                ordinal = len(out)
                out.append(
                    Chunk(
                        id=f"{doc_id}-{ordinal:05d}",
                        doc_id=doc_id,
                        text=text,
                        page_start=page.number,
                        page_end=page.number,
                        char_start=piece.start,
                        char_end=piece.end,
                        section=piece.section,
                        token_count=piece.tokens,
                        ordinal=ordinal,
                    )
                )
        if self.headers:
            apply_headers(doc, out)
        return out

    def sentences(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The sentence units of text[start:end] (rag.text's sentences, over-long ones split further)."""
        return sentence_spans(self.counter, text, start, end)

    def _page_units(self, page: Page, sections: list[tuple[int, str]]) -> list[Unit]:
        text = page.text
        unit_tokens = self.counter.unit_tokens
        units: list[Unit] = []
        para = 0
        for kind, start, end, level in regions(page):
            para += 1
            if kind == "heading":
                title = " ".join(text[start:end].split())[:_SECTION_TITLE_MAX]
                while sections and sections[-1][0] >= level:
                    sections.pop()
                sections.append((level, title))
                path = _section_path(sections)
                units.append(Unit(start, end, unit_tokens(text[start:end]), "heading", para, path))
                continue
            path = _section_path(sections)
            if kind == "table":
                units.append(Unit(start, end, unit_tokens(text[start:end]), "table", para, path))
                continue
            for s, e in self.sentences(text, start, end):
                units.append(Unit(s, e, unit_tokens(text[s:e]), "sent", para, path))
        return units


def _section_path(sections: list[tuple[int, str]]) -> str:
    return " > ".join(title for _, title in sections if title)
