"""The text layer (rag.text): sentences, markers, content features, refusals."""

from __future__ import annotations

from rag.text.features import features, is_refusal, missing_numbers
from rag.text.sentences import parse_markers, split_sentences

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
    claim = features("公司2008年无形资产投资为1526.45万元")
    assert {"无形", "资产", "1526.45", "2008"} <= claim.grams & source.grams and not missing_numbers(claim, source)
    assert missing_numbers(features("公司2008年无形资产投资为1600万元"), source) == {"1600"}
    # a number counts what its unit says: 18 classrooms are not 18 students
    assert missing_numbers(features("有18名学生"), features("设有18个课室")) == {"18"}


def test_a_table_row_is_one_sentence_whatever_its_cells_say() -> None:
    text = (
        "Intro. Here.\n| Authorized - 400,000 shares; issued | 22 | 23 |\n| ($ in Billions, excl. EPS; x) | 1 |\nAfter."
    )
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Intro.",
        "Here.",
        "| Authorized - 400,000 shares; issued | 22 | 23 |",
        "| ($ in Billions, excl. EPS; x) | 1 |",
        "After.",
    ]


def test_refusal_detected_in_both_languages() -> None:
    assert is_refusal("The documents do not say.") and is_refusal("文档中没有相关信息。")
    assert is_refusal("资料中未提及该公司的股票代码。") and is_refusal("I cannot find this in the sources.")
    assert not is_refusal("iPhone net sales were $39,669 million.")


def test_one_abbreviation_list_keeps_titles_times_and_suffixes_in_their_sentence() -> None:
    text = "Prof. Li spoke at 4:30 p.m. ET on Monday. Robert J. Decker, Jr. signed it. Done."
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Prof. Li spoke at 4:30 p.m. ET on Monday.",
        "Robert J. Decker, Jr. signed it.",
        "Done.",
    ]


def test_split_sentences_is_linear_on_long_lines_with_pipes() -> None:
    """Each '|' re-read the text since the sentence start (or to the line end): 400k chars took 22 s.

    Compared with ordinary sentences of the same count in the same run, so a slow machine does not fail it.
    """
    import time

    def timed(text: str) -> tuple[float, list[tuple[int, int]]]:
        t0 = time.perf_counter()
        spans = split_sentences(text)
        return time.perf_counter() - t0, spans

    normal_s, _ = timed("x " + "ab. " * 100_000)
    cases = {
        "pipes after sentence ends": "x " + "|a. " * 100_000,  # every sentence starts with '|': a table row?
        "pipes in one sentence": "x|" * 500_000,  # 1 MB, no sentence end at all (took 8 s)
    }
    for name, text in cases.items():
        took, spans = timed(text)
        assert took <= 3 * normal_s + 0.2 and took < 5.0, (name, took, normal_s)
        assert spans[0][0] == 0 and spans[-1][1] == len(text.rstrip())
    assert len(split_sentences(cases["pipes after sentence ends"])) == 100_000  # "x |a.", then "|a." each


def test_sections_and_render_split_where_the_text_layer_does() -> None:
    """Paging and quote highlighting use rag.text's sentences: no cut inside '5.2' or after 'Mr.'."""
    from ingest.parsers.sections import split_long
    from server.render import _fragments

    text = " ".join(["Revenue was 5.2 million and Mr. Wu said so."] * 40)
    pieces = split_long(text, 300)
    assert len(pieces) > 3 and "".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert all(p.endswith("said so.") for p in pieces[:-1]), pieces
    fragments = _fragments("Revenue rose 2.5 percent to 5 million dollars. Costs fell.")
    assert fragments[0] == "Revenue rose 2.5 percent" and "Costs fell." in fragments, fragments
