"""Citation verification on hand-written answers (Chinese and English)."""

from __future__ import annotations

from rag.citations import (
    features,
    is_refusal,
    parse_markers,
    split_sentences,
    support,
    verify_answer,
)
from rag.records import Chunk, Hit

PAGES = {
    ("zh", 1): "第一节 公司简介\n江苏爱康太阳能科技股份有限公司成立于2006年3月。公司2008年度无形资产投资1,526.45万元。\n其他内容。",
    ("zh", 2): "2006年中，多晶硅价格大约是100美元/千克。公司法定代表人为邹承慧先生。",
    ("en", 4): (
        "Item 2. Results\nApple Inc. reported total net sales of $81,797 million for the quarter. "
        "iPhone net sales were $39,669 million, down 2% year over year. Services net sales grew."
    ),
}


def page_text(doc_id: str, page: int) -> str:
    return PAGES[(doc_id, page)]


def hit(doc_id: str, page: int, text: str, rank: int, doc: str) -> Hit:
    start = PAGES[(doc_id, page)].index(text)
    chunk = Chunk(
        id=f"{doc_id}-{page}-{rank}", doc_id=doc_id, text=text, page_start=page, page_end=page,
        char_start=start, char_end=start + len(text), doc=doc,
    )
    return Hit(chunk=chunk, score=0.9, rank=rank, retriever="hybrid")


ZH1 = hit("zh", 1, "江苏爱康太阳能科技股份有限公司成立于2006年3月。公司2008年度无形资产投资1,526.45万元。", 1, "爱康.pdf")
ZH2 = hit("zh", 2, "2006年中，多晶硅价格大约是100美元/千克。公司法定代表人为邹承慧先生。", 2, "爱康.pdf")
EN1 = hit("en", 4, PAGES[("en", 4)].split("\n", 1)[1], 1, "aapl-10q.pdf")


def assert_exact(citations) -> None:  # type: ignore[no-untyped-def]
    for c in citations:
        assert c.verified
        assert page_text(c.doc_id, c.page)[c.char_start : c.char_end] == c.quote


def test_split_sentences_chinese_and_english_keeps_markers_with_their_sentence() -> None:
    text = "营收为5亿元。[1]利润为1亿元[2]！Apple Inc. sold 5.2 million units [3]. Done"
    spans = [text[s:e] for s, e in split_sentences(text)]
    assert spans == ["营收为5亿元。[1]", "利润为1亿元[2]！", "Apple Inc. sold 5.2 million units [3].", "Done"]


def test_parse_marker_forms() -> None:
    found = [numbers for _, _, numbers in parse_markers("a [1] b [2, 3] c 【4】 d [1-3] e [Source 5] f [2，6]")]
    assert found == [[1], [2, 3], [4], [1, 2, 3], [5], [2, 6]]


def test_chinese_matching_uses_character_ngrams_and_numbers() -> None:
    source = features(ZH1.chunk.text)
    assert support(features("公司2008年无形资产投资为1526.45万元"), source).passes()
    wrong_number = support(features("公司2008年无形资产投资为1600万元"), source)
    assert not wrong_number.passes() and wrong_number.missing_numbers == {"1600"}
    assert not support(features("公司的主要客户是国家电网"), source).passes()


def test_correct_citation_is_kept_with_exact_quote_zh() -> None:
    v = verify_answer("公司2008年度无形资产投资为1526.45万元[1]。", [ZH1, ZH2], page_text, question="无形资产投资多少？")
    assert v.text == "公司2008年度无形资产投资为1526.45万元[1]。"
    assert len(v.citations) == 1 and not v.unsupported
    c = v.citations[0]
    assert (c.n, c.doc, c.page, c.quote) == (1, "爱康.pdf", 1, "公司2008年度无形资产投资1,526.45万元。")
    assert_exact(v.citations)


def test_wrong_marker_is_repointed_and_renumbered_in_order_of_use() -> None:
    answer = "法定代表人是邹承慧[1]。无形资产投资为1526.45万元【2】。"
    v = verify_answer(answer, [ZH1, ZH2], page_text)
    # [1] pointed at ZH1 but ZH2 says it; 【2】 pointed at ZH2 but ZH1 says it
    assert v.repointed == 2
    assert v.text == "法定代表人是邹承慧[1]。无形资产投资为1526.45万元[2]。"
    assert [c.page for c in v.citations] == [2, 1]
    assert v.citations[0].quote == "公司法定代表人为邹承慧先生。"
    assert_exact(v.citations)


def test_unsupported_sentence_loses_its_citation_and_is_flagged() -> None:
    answer = "iPhone net sales were $39,669 million [1]. The CEO of Apple is Tim Cook [1]. iPhone sales were $50,000 million [1]."
    v = verify_answer(answer, [EN1], page_text)
    assert v.text == "iPhone net sales were $39,669 million [1]. The CEO of Apple is Tim Cook. iPhone sales were $50,000 million."
    assert v.unsupported == ["The CEO of Apple is Tim Cook.", "iPhone sales were $50,000 million."]
    assert len(v.citations) == 1 and v.citations[0].quote == "iPhone net sales were $39,669 million, down 2% year over year."
    assert_exact(v.citations)


def test_out_of_range_marker_is_removed_never_shown() -> None:
    v = verify_answer("The moon is made of cheese [7]. Apple reported total net sales of $81,797 million [7].", [EN1], page_text)
    assert "[7]" not in v.text and v.removed_markers >= 1
    assert v.unsupported == ["The moon is made of cheese."]
    # the supported claim keeps a citation, re-pointed to the one source that was given
    assert v.text.endswith("$81,797 million [1].") and all(c.n <= len(v.citations) for c in v.citations)
    assert_exact(v.citations)


def test_same_source_cited_twice_reuses_number_only_for_same_quote() -> None:
    answer = "iPhone net sales were $39,669 million [1]. They fell 2% year over year [1]. Total net sales were $81,797 million [1]."
    v = verify_answer(answer, [EN1], page_text)
    assert v.text == "iPhone net sales were $39,669 million [1]. They fell 2% year over year [1]. Total net sales were $81,797 million [2]."
    assert [c.n for c in v.citations] == [1, 2]
    assert_exact(v.citations)


def test_uncited_supported_sentence_gets_a_citation() -> None:
    v = verify_answer("公司法定代表人为邹承慧先生。", [ZH1, ZH2], page_text)
    assert v.text == "公司法定代表人为邹承慧先生[1]。" and v.citations[0].page == 2
    assert_exact(v.citations)


def test_refusal_detected_in_both_languages() -> None:
    assert verify_answer("The documents do not say.", [EN1], page_text).refusal
    assert verify_answer("文档中没有相关信息。", [ZH1], page_text).refusal
    assert is_refusal("资料中未提及该公司的股票代码。") and is_refusal("I cannot find this in the sources.")
    assert not is_refusal("iPhone net sales were $39,669 million.")


def test_quote_located_on_the_right_page_of_a_two_page_chunk() -> None:
    text = PAGES[("zh", 1)].rsplit("\n", 1)[0].split("\n", 1)[1] + PAGES[("zh", 2)]
    chunk = Chunk(id="span", doc_id="zh", text=text, page_start=1, page_end=2, char_start=PAGES[("zh", 1)].index("江苏"), char_end=0, doc="爱康.pdf")
    v = verify_answer("多晶硅价格在2006年中约为100美元/千克[1]。", [Hit(chunk, 0.9, 1, "dense")], page_text)
    assert [(c.page, c.quote) for c in v.citations] == [(2, "2006年中，多晶硅价格大约是100美元/千克。")]
    assert_exact(v.citations)


def test_quote_not_on_any_page_is_not_shown() -> None:
    chunk = Chunk(id="ghost", doc_id="en", text="Ghost revenue was $9 million.", page_start=4, page_end=4, char_start=0, char_end=29, doc="x.pdf")
    v = verify_answer("Ghost revenue was $9 million [1].", [Hit(chunk, 0.9, 1, "dense")], page_text)
    assert v.citations == [] and v.unsupported == ["Ghost revenue was $9 million."]


def test_instruction_placeholder_is_not_a_marker() -> None:
    v = verify_answer("公司法定代表人为邹承慧先生[n]。", [ZH1, ZH2], page_text)
    assert v.text == "公司法定代表人为邹承慧先生[1]。" and "[n" not in v.text


def test_quote_is_the_sentence_with_the_answer_not_a_title_that_repeats_the_question() -> None:
    page = "星河新能源股份有限公司2024年年度报告摘要\n报告期内，公司实现营业收入58.3亿元，同比增长24.6%；净利润为6.12亿元。"
    PAGES[("xh", 1)] = page
    try:
        src = hit("xh", 1, page, 1, "xinghe.pdf")
        v = verify_answer("星河新能源2024年营业收入为58.3亿元[1]", [src], page_text, question="星河新能源2024年营业收入是多少？")
        assert len(v.citations) == 1
        assert "58.3亿元" in v.citations[0].quote and "年度报告摘要" not in v.citations[0].quote
        assert_exact(v.citations)
    finally:
        del PAGES[("xh", 1)]


def _page_hit(key: tuple[str, int], page: str, doc: str) -> Hit:
    PAGES[key] = page
    return hit(key[0], key[1], page, 1, doc)


def test_a_number_far_from_the_claim_does_not_verify_it() -> None:
    # "18" is in the chunk, but five sentences away from anything about students.
    page = (
        "嘉诺撒圣家学校是香港九龙城区的一所津贴女子小学。学校位于九龙城联合道。该校于1954年创校。"
        "校舍于1970年代扩建。学校设有图书馆。礼堂可容纳18张圆桌。"
    )
    try:
        src = _page_hit(("sch", 1), page, "school.pdf")
        v = verify_answer("嘉诺撒圣家学校目前有18名在校学生[1]。", [src], page_text, question="嘉诺撒圣家学校有多少名学生？")
        assert v.citations == [] and v.unsupported == ["嘉诺撒圣家学校目前有18名在校学生。"]
        # "18" next to the school's name, but counting tables, not students: not verified either
        near = (
            "嘉诺撒圣家学校是香港九龙城区的一所津贴女子小学。学校的面积为3000平方米，设有18个课室。"
        )
        PAGES[("sch", 2)] = near
        v = verify_answer(
            "嘉诺撒圣家学校目前有18名在校学生[1]。", [hit("sch", 2, near, 1, "school.pdf")], page_text, question="嘉诺撒圣家学校有多少名学生？"
        )
        assert v.citations == [] and v.unsupported
        del PAGES[("sch", 2)]
        # the same number next to the claim's words verifies
        ok = verify_answer("该校于1954年创校[1]。", [src], page_text, question="嘉诺撒圣家学校哪年创校？")
        assert [c.quote for c in ok.citations] == ["该校于1954年创校。"]
    finally:
        del PAGES[("sch", 1)]


def test_a_table_row_is_checked_with_its_header() -> None:
    rows = "\n".join(f"| Segment {i} | {100 + i} | {90 + i} |" for i in range(8))
    page = f"| Segment | 2023 | 2022 |\n| --- | --- | --- |\n{rows}\n| Services | 85,200 | 78,129 |"
    try:
        src = _page_hit(("tbl", 1), page, "t.pdf")
        v = verify_answer("Services revenue was 85,200 in 2023 [1].", [src], page_text, question="What were Services revenues?")
        assert len(v.citations) == 1 and "85,200" in v.citations[0].quote
        assert_exact(v.citations)
    finally:
        del PAGES[("tbl", 1)]


def test_a_short_answer_verifies_where_its_passage_covers_the_question() -> None:
    page = "学生会每年都会举办不同的活动予学生，然而最著名的有：敬师日由学生会举办，以作学生感谢老师。学校位于沙田。"
    try:
        src = _page_hit(("hk", 1), page, "school.pdf")
        question = "学生会举办的最有名的活动是什么？"
        v = verify_answer("敬师日", [src], page_text, question=question)
        assert v.text == "敬师日[1]" and "敬师日" in v.citations[0].quote
        assert_exact(v.citations)
        # the same words, but asked about something the passage does not cover: not verified, not shown
        other = verify_answer("敬师日[1]", [src], page_text, question="香港政府的教育局局长是谁？")
        assert other.citations == [] and other.unsupported == ["敬师日"]
        # a short answer that is not in the source at all
        absent = verify_answer("中秋晚会[1]", [src], page_text, question=question)
        assert absent.citations == [] and absent.unsupported == ["中秋晚会"]
    finally:
        del PAGES[("hk", 1)]


def test_a_placeholder_wrapped_around_a_marker_keeps_the_marker() -> None:
    v = verify_answer("公司法定代表人为邹承慧先生[n [2]]", [ZH1, ZH2], page_text)
    assert v.text == "公司法定代表人为邹承慧先生[1]" and len(v.citations) == 1


def test_a_short_figure_must_stand_where_the_names_asked_about_are() -> None:
    page = "| Store count | Q2 FY24 |\n| --- | --- |\n| Domestic | 907 |\n| Canada | 127 |"
    try:
        src = _page_hit(("st", 1), page, "stores.pdf")
        canada = verify_answer("127 [1]", [src], page_text, question="How many stores were operating in Canada at the end of Q2?")
        assert [c.quote for c in canada.citations] == ["| Canada | 127 |"]
        china = verify_answer("127 [1]", [src], page_text, question="How many stores were operating in China at the end of Q2?")
        assert china.citations == [] and china.unsupported == ["127"]
    finally:
        del PAGES[("st", 1)]
