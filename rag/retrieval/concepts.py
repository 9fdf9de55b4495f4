"""Financial concepts in questions, spelled the way statements label their lines.

Questions about filings ask for derived measures ("free cash flow", "capital-intensive", "effective
tax rate", "interest coverage"); the page that answers is a statement table whose rows say
"Net cash provided by operating activities", "Purchases of property and equipment", "Provision for
income taxes". Neither the embedder nor BM25 bridges that. This table maps a concept to the line
items and statement titles that carry it; the retriever runs them as an extra keyword ranking
(never replacing the question's own words). English only: Chinese filings' questions already use
the statements' words (营业收入, 净利润...).
"""

from __future__ import annotations

import re

# concept pattern (lower case, on the question) -> what statements print
_CONCEPTS: list[tuple[str, str]] = [
    (
        r"free cash ?flow|fcf",
        "net cash provided by operating activities purchases of property and equipment capital expenditures consolidated statements of cash flows",
    ),
    (
        r"cash ?flow|operating activities|investing activities|financing activities",
        "net cash provided by used in operating investing financing activities consolidated statements of cash flows",
    ),
    (
        r"capex|capital expenditure|capital[- ]intensive|fixed assets",
        "purchases of property plant and equipment capital expenditures property and equipment net total assets",
    ),
    (r"revenue|top line|net sales", "net sales total revenues consolidated statements of operations income"),
    (r"gross margin|gross profit", "gross profit gross margin cost of sales cost of revenues net sales"),
    (
        r"operating margin|operating income|operating profit|\bebit\b",
        "operating income income from operations net sales total revenues",
    ),
    (r"ebitda", "operating income depreciation and amortization"),
    (
        r"effective tax rate|tax rate|income tax",
        "effective tax rate provision for income taxes income before income taxes",
    ),
    (r"interest coverage|interest expense", "interest expense operating income"),
    (
        r"net income|net earnings|net profit|profit margin|net margin",
        "net income net earnings consolidated statements of operations",
    ),
    (r"\beps\b|earnings per share", "earnings per share basic diluted net income per share"),
    (r"dividend", "dividends paid cash dividends declared per share"),
    (
        r"working capital|current ratio|quick ratio|liquidity",
        "total current assets total current liabilities cash and cash equivalents consolidated balance sheets",
    ),
    (r"inventor(y|ies)", "inventories merchandise inventories cost of sales"),
    (r"return on assets|\broa\b|asset turnover|total assets", "total assets net income consolidated balance sheets"),
    (
        r"return on equity|\broe\b|shareholders'? equity|stockholders'? equity",
        "total shareholders equity stockholders equity net income",
    ),
    (
        r"\bdebt\b|leverage|borrowings",
        "long-term debt short-term borrowings total debt current portion of long-term debt",
    ),
    (r"cash (and|&) cash equivalents|cash position", "cash and cash equivalents consolidated balance sheets"),
    (r"depreciation|amortization|\bd&a\b", "depreciation and amortization"),
    (
        r"days (sales|payable|inventory)|\bdso\b|\bdpo\b|receivable",
        "accounts receivable net accounts payable inventories",
    ),
    (r"share repurchase|buyback|repurchase", "repurchases of common stock treasury stock"),
    (r"restructuring", "restructuring charges restructuring and other"),
    (r"goodwill|impairment", "goodwill impairment intangible assets"),
    (r"segment", "segment information reportable segments net sales operating income by segment"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), terms) for p, terms in _CONCEPTS]


def concept_query(question: str) -> str:
    """The statement wording for the financial concepts the question names ('' when it names none)."""
    out: list[str] = []
    for pattern, terms in _COMPILED:
        if pattern.search(question) and terms not in out:
            out.append(terms)
    return " ".join(out)
