#!/usr/bin/env python3
"""Validate questions.jsonl of the "unseen" evaluation set.

Checks the schema, the required counts, and that every answerable question's
evidence_text occurs in PyMuPDF's text of one of its evidence_pages (after
collapsing whitespace; for Chinese documents whitespace is ignored entirely).
Run fetch.py first. Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import fitz  # PyMuPDF

HERE = Path(__file__).resolve().parent
DEFAULT_PDFS = Path.home() / ".cache" / "citeqa" / "unseen"
FIELDS = {
    "id": str,
    "question": str,
    "answer": str,
    "doc": str,
    "evidence_pages": list,
    "evidence_text": str,
    "language": str,
    "doc_language": str,
    "answerable": bool,
    "kind": str,
}
KINDS = {"fact", "number", "name", "table", "procedure", "definition"}
# minimum counts required by the brief
MINIMA = {
    "total": 50,
    "docs": 5,
    "answerable": 38,
    "unanswerable": 10,
    "en->zh": 10,
    "zh->en": 3,
    "zh docs": 3,
    "en docs": 2,
}


def norm(text: str, zh: bool) -> str:
    return re.sub(r"\s+", "", text) if zh else " ".join(text.split())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    ap.add_argument(
        "--pdfs", type=Path, default=DEFAULT_PDFS, help=f"folder with the fetched PDFs (default: {DEFAULT_PDFS})"
    )
    args = ap.parse_args()

    errors: list[str] = []
    rows = [json.loads(line) for line in args.questions.read_text("utf-8").splitlines() if line.strip()]
    docs: dict[str, fitz.Document] = {}
    ids: set[str] = set()

    for q in rows:
        qid = q.get("id", "?")
        for key, typ in FIELDS.items():
            if not isinstance(q.get(key), typ):
                errors.append(f"{qid}: field {key!r} missing or not {typ.__name__}")
        if set(q) - set(FIELDS):
            errors.append(f"{qid}: unknown fields {sorted(set(q) - set(FIELDS))}")
        if qid in ids:
            errors.append(f"{qid}: duplicate id")
        ids.add(qid)
        if q.get("language") not in ("zh", "en") or q.get("doc_language") not in ("zh", "en"):
            errors.append(f"{qid}: language/doc_language must be 'zh' or 'en'")
        name = q.get("doc", "")
        if name not in docs:
            path = args.pdfs / name
            if not path.is_file():
                errors.append(f"{qid}: PDF not found: {path} (run fetch.py)")
                continue
            docs[name] = fitz.open(path)
        doc = docs[name]
        if q.get("answerable") is False:
            if q.get("kind") != "unanswerable" or q.get("answer") != "N/A":
                errors.append(f"{qid}: unanswerable needs kind 'unanswerable' and answer 'N/A'")
            continue
        if q.get("kind") not in KINDS:
            errors.append(f"{qid}: bad kind {q.get('kind')!r}")
        pages = q.get("evidence_pages") or []
        if not pages or not all(isinstance(p, int) and 1 <= p <= len(doc) for p in pages):
            errors.append(f"{qid}: bad evidence_pages {pages}")
            continue
        zh = q.get("doc_language") == "zh"
        needle = norm(q.get("evidence_text", ""), zh)
        if not needle:
            errors.append(f"{qid}: empty evidence_text")
        elif not any(needle in norm(doc[p - 1].get_text(), zh) for p in pages):
            errors.append(f"{qid}: evidence_text not found on pages {pages} of {name}")

    # counts
    pairs = Counter(f"{q.get('language')}->{q.get('doc_language')}" for q in rows)
    kinds = Counter(q.get("kind") for q in rows)
    per_doc = Counter(q.get("doc") for q in rows)
    doc_lang = {q.get("doc"): q.get("doc_language") for q in rows}
    n_ans = sum(q.get("answerable") is True for q in rows)
    have = {
        "total": len(rows),
        "docs": len(per_doc),
        "answerable": n_ans,
        "unanswerable": len(rows) - n_ans,
        "en->zh": pairs["en->zh"],
        "zh->en": pairs["zh->en"],
        "zh docs": sum(v == "zh" for v in doc_lang.values()),
        "en docs": sum(v == "en" for v in doc_lang.values()),
    }
    for key, minimum in MINIMA.items():
        if have[key] < minimum:
            errors.append(f"count {key}: {have[key]} < required {minimum}")

    print(f"questions: {len(rows)}  answerable: {n_ans}  unanswerable: {len(rows) - n_ans}")
    print("by language pair (question->doc):", dict(sorted(pairs.items())))
    print("by kind:", dict(sorted(kinds.items())))
    print("by doc:")
    for name, n in sorted(per_doc.items()):
        pages = len(docs[name]) if name in docs else "?"
        print(f"  {name} ({doc_lang[name]}, {pages} pages): {n}")
    for err in errors:
        print("FAIL", err)
    print("OK" if not errors else f"{len(errors)} failure(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
