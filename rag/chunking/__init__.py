"""Chinese-aware, heading-aware, table-aware chunking with exact page offsets.

`make_chunker(settings, count_tokens)` returns a `SentenceChunker` whose `chunk(doc, doc_id)` turns a
ParsedDocument into Chunks sized in the embedder's own tokens.

Modules: `regions` (a page as text / heading / table regions), `splitting` (sentence units, over-long
sentences split), `tables` (a big table split by rows), `packing` (units into chunks), `counting`
(cached token counts), `chunker` (SentenceChunker), `factory` (make_chunker, CHUNKER_VERSION and the
manifest's `chunker` entry).

How a document is cut:
- **Units.** Each page is read block by block (Page.blocks, in order; text not covered by any block
  is read as blank-line-separated paragraphs, where a run of lines starting with '|' is a markdown
  table). Text blocks are split into sentences by rag.text.split_sentences — the splitter citations
  quote with, so a chunk ends where a cited sentence ends (Chinese 。！？；, '!'/'?'/';', an English '.'
  before a space, not after Inc./e.g./U.S./a single capital; a line break; each sentence keeps its
  closing quotes and citation markers). A sentence longer than `max_tokens` is split again at clause
  marks (，、：, line breaks, spaces), and as a last resort by characters. A table block is one
  atomic unit.
- **Packing.** Units are packed greedily up to `max_tokens`. A heading (Block.heading_level > 0)
  always starts a new chunk and stays with the text after it (several headings in a row stay
  together); the heading stack gives `Chunk.section`, e.g. "第二节 公司简介 > 一、营业收入". A new
  paragraph that does not fit whole starts a new chunk once the current one is half full. After a
  break inside running text, the next chunk repeats trailing sentences of the previous one, up to
  `overlap_tokens`. A chunk under `min_tokens` is merged into a neighbour on the same page when
  the result fits.
- **Tables** are never split inside a row. A table that fits stays whole; a bigger one is split by
  rows and every part after the first starts with the table's header row (+ separator) again.
- **Pages and offsets.** Chunks never cross a page: `page_end == page_start` and
  `page.text[char_start:char_end] == chunk.text`. The one exception is a table part that repeats
  the header: its text is `header + "\\n" + page.text[char_start:char_end]` (offsets cover its rows).
- **Sizes.** Every chunk's `token_count` is `count_tokens(chunk.text)` (the embedder's count, which
  includes its special/prefix tokens) and is <= `max_tokens`, except a single table row (or a
  header + one row) that is larger on its own.
- **Ids** are `f"{doc_id}-{ordinal:05d}"`: the same document, settings and CHUNKER_VERSION always give
  the same chunks, so a resumed ingest ends with exactly the chunks of a clean run.

Token counts are cached per distinct text; each sentence is counted once and each finished chunk
once more exactly (sums of sentence counts can be off by a token or two at the joins).
"""

from rag.chunking.chunker import SentenceChunker
from rag.chunking.factory import CHUNKER_VERSION, chunker_manifest, make_chunker
from rag.chunking.units import CountTokens

__all__ = ["CHUNKER_VERSION", "CountTokens", "SentenceChunker", "chunker_manifest", "make_chunker"]
