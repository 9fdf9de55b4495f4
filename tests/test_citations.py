"""The text layer answers are checked with: sentences, markers, content features, refusals."""

from __future__ import annotations

from rag.citations import (
    features,
    is_refusal,
    parse_markers,
    split_sentences,
    support,
)

ZH1_TEXT = "江苏爱康太阳能科技股份有限公司成立于2006年3月。公司2008年度无形资产投资1,526.45万元。"


def test_split_sentences_chinese_and_english_keeps_markers_with_their_sentence() -> None:
    text = "营收为5亿元。[1]利润为1亿元[2]！Apple Inc. sold 5.2 million units [3]. Done"
    spans = [text[s:e] for s, e in split_sentences(text)]
    assert spans == ["营收为5亿元。[1]", "利润为1亿元[2]！", "Apple Inc. sold 5.2 million units [3].", "Done"]


def test_parse_marker_forms() -> None:
    found = [numbers for _, _, numbers in parse_markers("a [1] b [2, 3] c 【4】 d [1-3] e [Source 5] f [2，6]")]
    assert found == [[1], [2, 3], [4], [1, 2, 3], [5], [2, 6]]


def test_chinese_matching_uses_character_ngrams_and_numbers() -> None:
    source = features(ZH1_TEXT)
    assert support(features("公司2008年无形资产投资为1526.45万元"), source).passes()
    wrong_number = support(features("公司2008年无形资产投资为1600万元"), source)
    assert not wrong_number.passes() and wrong_number.missing_numbers == {"1600"}
    assert not support(features("公司的主要客户是国家电网"), source).passes()


def test_refusal_detected_in_both_languages() -> None:
    assert is_refusal("The documents do not say.") and is_refusal("文档中没有相关信息。")
    assert is_refusal("资料中未提及该公司的股票代码。") and is_refusal("I cannot find this in the sources.")
    assert not is_refusal("iPhone net sales were $39,669 million.")
