"""Answer-correctness scoring (rag.scoring): pure functions, no model."""

from __future__ import annotations

import pytest

from rag.scoring import answer_numbers, content_tokens, correctness, numbers_match, token_f1


def test_answer_numbers_normalises_separators_percent_and_markers() -> None:
    assert answer_numbers("Revenue was $1,234.50 [3] in FY2023, up 30.80% 【2】.") == {"1234.5", "2023", "30.8"}
    assert answer_numbers("营业收入１２，３４５．００万元，增长００７％") == {"12345", "7"}
    assert answer_numbers("see [1, 2] and [12]") == set()
    # A comma before other than three digits separates two numbers, it does not group thousands.
    assert answer_numbers("12,5 and 1,2345") == {"12", "5", "1", "2345"}
    assert answer_numbers("0.50 and 3.00 and 0") == {"0.5", "3", "0"}


def test_numbers_match_tolerates_rounding_to_the_reference_precision() -> None:
    assert numbers_match("The margin was 30.77%.", "30.8%") is True
    assert numbers_match("The margin was 30.74%.", "30.8%") is False
    # The reference's written precision counts: "40.0" asks for one decimal, 39.6 is not it.
    assert numbers_match("about 39.6", "40.0") is False
    assert numbers_match("exactly 40", "40.0") is True
    assert numbers_match("$39,669 million", "$39,669 million") is True
    assert numbers_match("anything", "no numbers here") is None
    assert numbers_match("in 2022 it was 5.1%", "5.1% in 2023") is False  # every reference number


def test_f1_words_without_stopwords_and_chinese_bigrams() -> None:
    assert content_tokens("The Gross margin was 44.5 percent [2]") == ["44.5", "gross", "margin", "percent"]
    assert content_tokens("深圳证券交易所") == ["深圳", "圳证", "证券", "券交", "交易", "易所"]
    assert token_f1("Gross margin was 44.5 percent", "44.5 percent") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # 8 answer bigrams, 3 reference bigrams, all 3 shared.
    assert token_f1("营业收入为十二亿元", "十二亿元") == pytest.approx(2 * (3 / 8) / (3 / 8 + 1))
    assert token_f1("cats", "dogs") == 0.0 and token_f1("", "x") == 0.0
    mixed = content_tokens("苹果 iPhone 销量")
    assert set(mixed) == {"苹果", "销量", "iphone"}


def test_correct_with_numbers() -> None:
    assert correctness("Gross margin was 44.5 percent [1].", "44.5 percent") == {
        "numbers_match": True,
        "f1": pytest.approx(0.6667, abs=1e-4),
        "correct": True,
    }
    # A wrong number is wrong however close the wording.
    wrong = correctness("Gross margin was 45.5 percent.", "44.5 percent")
    assert wrong["numbers_match"] is False and wrong["correct"] is False
    # Short reference: the matching (rounded) number alone is enough.
    assert correctness("It rose by 30.77% [2].", "30.8%")["correct"] is True
    assert correctness("营业收入为11.42亿元【1】", "11.42亿元")["correct"] is True
    # Long reference: the right number in an unrelated sentence is not enough.
    long_ref = "Net sales decreased 1% to 81.8 billion dollars, driven by lower iPhone and Mac revenue"
    noise = "Temperatures of 1 and 81.8 degrees were recorded in Ohio, Texas, Nevada and Utah last summer"
    assert correctness(noise, long_ref)["numbers_match"] is True and correctness(noise, long_ref)["correct"] is False
    assert correctness("Net sales fell to 81.8 billion dollars on lower iPhone revenue.", long_ref)["correct"] is False
    assert (
        correctness("Net sales decreased 1% to 81.8 billion dollars on lower iPhone revenue.", long_ref)["correct"]
        is True
    )


def test_correct_without_numbers_and_refusal() -> None:
    assert correctness("公司股票在深圳证券交易所上市。", "深圳证券交易所")["correct"] is True  # verbatim
    assert correctness("It is listed on the New-York stock exchange.", "New York Stock Exchange")["correct"] is True
    assert correctness("上海证券交易所", "深圳证券交易所")["correct"] is True  # 4/6 bigrams: f1 0.67
    assert correctness("北京", "深圳证券交易所")["correct"] is False
    assert correctness("No, it is not capital intensive.", "Yes, it is capital intensive")["numbers_match"] is None
    refused = correctness("深圳证券交易所", "深圳证券交易所", refused=True)
    assert refused["correct"] is False and refused["f1"] == 1.0
    assert correctness("44.5 percent", "44.5 percent", refused=True)["correct"] is False
    assert correctness("anything", "")["correct"] is False
