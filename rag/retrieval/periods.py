"""Numbers and periods in questions: "FY2022", "Q3", "二〇二三年" matched the way filings write them.

A filing's tables say "2022", "Three Months Ended September 30", "2023年"; questions say "FY2022",
"Q3 2023", "二〇二三年". The keyword query gets the filing's spellings added, and a table chunk whose
header row names the question's year gets a small boost (`header_years`): "2022 | 2021 | 2020"
is the table for FY2022, the same words in a 2019 table are not.
"""

from __future__ import annotations

import re

from rag.text.sentences import first_table_row

FISCAL = re.compile(r"(?<![A-Za-z])FY ?'?(\d{4}|\d{2})(?![0-9])", re.IGNORECASE)
_QUARTER = re.compile(r"(?<![A-Za-z0-9])Q([1-4])(?![0-9])", re.IGNORECASE)
_HALF = re.compile(r"(?<![A-Za-z0-9])H([12])(?![0-9])")
YEAR = re.compile(r"(?<![0-9])(19[5-9][0-9]|20[0-9][0-9])(?![0-9])")
_ZH_DIGITS = {
    "〇": "0",
    "零": "0",
    "一": "1",
    "二": "2",
    "三": "3",
    "四": "4",
    "五": "5",
    "六": "6",
    "七": "7",
    "八": "8",
    "九": "9",
}
_ZH_YEAR = re.compile("([〇零一二三四五六七八九]{4})年")
_ORDINAL = {"1": "first", "2": "second", "3": "third", "4": "fourth"}


def fiscal_year(match: re.Match[str]) -> str:
    """The year of a FISCAL match: "FY2022" and "FY22" -> "2022"."""
    year = match.group(1)
    return year if len(year) == 4 else "20" + year


def expand_periods(query: str) -> str:
    """The query plus the spellings filings use for its periods ('' when it names none)."""
    extra: list[str] = []
    # Only the distinctive spellings: "fiscal" or "ended" stand on every page of a filing and would
    # only dilute the keyword query.
    for m in FISCAL.finditer(query):
        extra.append(fiscal_year(m))
    for m in _QUARTER.finditer(query):
        extra += [_ORDINAL[m.group(1)], "quarter"]
    for m in _HALF.finditer(query):
        extra += ["six months"] if m.group(1) == "1" else ["second half"]
    for m in _ZH_YEAR.finditer(query):
        extra.append("".join(_ZH_DIGITS[c] for c in m.group(1)) + "年")
    return " ".join(extra)


def question_years(query: str) -> set[str]:
    years = {m.group(1) for m in YEAR.finditer(query)}
    for m in FISCAL.finditer(query):
        years.add(fiscal_year(m))
    for m in _ZH_YEAR.finditer(query):
        years.add("".join(_ZH_DIGITS[c] for c in m.group(1)))
    return years


def header_years(text: str) -> set[str]:
    """Years in a table chunk's header: its first markdown row with cells."""
    lines = text.splitlines()
    i = first_table_row(lines)
    return set() if i is None else {m.group(1) for m in YEAR.finditer(lines[i])}
