"""Builders shared by the store / retrieval / eval tests: documents with chunks and vectors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from rag.records import Chunk, Page, ParsedDocument


def make_doc(
    source: str,
    pages: Sequence[Sequence[str]],
    *,
    sha: str | None = None,
    doc_id: str | None = None,
    metadata: dict | None = None,
) -> tuple[ParsedDocument, list[Chunk]]:
    """`pages` is a list of pages, each a list of chunk texts (joined by a blank line into the page text)."""
    page_objs: list[Page] = []
    chunks: list[Chunk] = []
    body = "\n".join("\n\n".join(p) for p in pages)
    sha = sha or hashlib.sha256((source + body).encode()).hexdigest()
    doc_id = doc_id or sha[:16]
    for number, texts in enumerate(pages, start=1):
        text = "\n\n".join(texts)
        page_objs.append(Page(number=number, text=text))
        offset = 0
        for t in texts:
            start = text.index(t, offset)
            chunks.append(
                Chunk(
                    id=f"{doc_id}-{len(chunks):05d}",
                    doc_id=doc_id,
                    text=t,
                    page_start=number,
                    page_end=number,
                    char_start=start,
                    char_end=start + len(t),
                    ordinal=len(chunks),
                    token_count=len(t.split()),
                )
            )
            offset = start + len(t)
    doc = ParsedDocument(
        source=source,
        sha256=sha,
        title=source.rsplit("/", 1)[-1],
        pages=page_objs,
        metadata=metadata or {},
    )
    return doc, chunks


def add(store, embedder, source: str, pages: Sequence[Sequence[str]], **kw) -> tuple[ParsedDocument, list[Chunk]]:  # type: ignore[no-untyped-def]
    doc, chunks = make_doc(source, pages, **{k: v for k, v in kw.items() if k != "replaces"})
    vectors = embedder.embed_documents([c.text for c in chunks]) if chunks else np.zeros((0, embedder.dim), np.float32)
    store.add_document(doc, chunks, vectors, replaces=kw.get("replaces"))
    return doc, chunks
