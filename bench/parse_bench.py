"""Parser benchmark: pages/s on a few bench PDFs, and the share of garbled/empty pages before and after OCR.

    .venv/bin/python bench/parse_bench.py [--docs ../shared/bench/docs] [--files A.pdf B.pdf ...]
                                          [--scan-limit 0] [--json bench/out/parse_bench.json]

Speed: each file is parsed in this process on one core, three ways: the default (tables on, OCR on),
tables off, and PyMuPDF's bare `page.get_text()` for reference; pages per wall-clock second and per
CPU second of this process (the latter is the one-core rate even when the machine is busy).

Quality: every page of every PDF in --docs (or the first --scan-limit files) is classed from its
raw text layer as empty / garbled / ok
(ingest.parsers.textclean.text_quality); pages the parser would OCR are then run through the real
per-page path with OCR on, and classed again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.parsers import parse_file  # noqa: E402
from ingest.parsers.pdf import _image_cover, extract_page, open_pdf  # noqa: E402
from ingest.parsers.textclean import text_quality  # noqa: E402
from rag.settings import IngestSettings  # noqa: E402

DEFAULT_FILES = [
    "cmrc2018_zhwiki_vol01.pdf",
    "docugami_10q__2023_Q3_AAPL.pdf",
    "erc2__Commerzbank.pdf",
    "prospectus_zh__厦门安妮股份有限公司.pdf",
]


def speed(path: Path) -> dict[str, object]:
    import pymupdf

    out: dict[str, object] = {"file": path.name}
    for label, settings in (("default", IngestSettings()), ("no_tables", IngestSettings(tables=False))):
        t, c = time.perf_counter(), time.process_time()
        doc = parse_file(path, settings)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        out["pages"] = doc.page_count
        out[f"{label}_s"] = round(dt, 2)
        out[f"{label}_pages_per_s"] = round(doc.page_count / dt, 1)
        # CPU time of this process: the one-core rate, less disturbed by other load on the machine.
        out[f"{label}_pages_per_cpu_s"] = round(doc.page_count / max(dc, 1e-9), 1)
        if label == "default":
            out["tables"] = sum(len(p.tables) for p in doc.pages)
            out["ocr_pages"] = len(doc.metadata["ocr_pages"])
    c = time.process_time()
    with pymupdf.open(str(path)) as raw:
        for page in raw:
            page.get_text()
        out["pymupdf_get_text_pages_per_cpu_s"] = round(raw.page_count / max(time.process_time() - c, 1e-9), 1)
    return out


def quality(paths: list[Path]) -> dict[str, object]:
    settings = IngestSettings()
    total = empty = garbled = scans = 0
    after_empty = after_garbled = ocr_ok = 0
    ocr_seconds = 0.0
    flagged: list[str] = []
    for path in paths:
        doc = open_pdf(path, settings)
        try:
            for page in doc:
                total += 1
                q = text_quality(page.get_text())
                needs_ocr = q.garbled or (q.chars < 50 and _image_cover(page) >= 0.3)
                empty += q.empty
                garbled += q.garbled
                if not needs_ocr:
                    after_empty += q.empty
                    continue
                scans += 1
                flagged.append(f"{path.name}#{page.number + 1}")
                t = time.perf_counter()
                raw = extract_page(doc, page.number, settings, str(path))
                ocr_seconds += time.perf_counter() - t
                q2 = text_quality("\n".join(ln.text for ln in raw.lines))
                after_empty += q2.empty
                after_garbled += q2.garbled
                ocr_ok += raw.ocr and not q2.empty
        finally:
            doc.close()
    return {
        "files": len(paths),
        "pages": total,
        "empty_before": empty,
        "garbled_before": garbled,
        "share_bad_before": round((empty + garbled) / max(total, 1), 4),
        "ocr_candidates": scans,
        "ocr_recovered": ocr_ok,
        "ocr_seconds": round(ocr_seconds, 1),
        "empty_after": after_empty,
        "garbled_after": after_garbled,
        "share_bad_after": round((after_empty + after_garbled) / max(total, 1), 4),
        "ocr_pages": flagged,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=Path, default=ROOT.parent / "shared" / "bench" / "docs")
    ap.add_argument("--files", nargs="*", default=DEFAULT_FILES)
    ap.add_argument("--scan-limit", type=int, default=0, help="quality scan on the first N PDFs (0 = all)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    parse_file(args.docs / args.files[0], IngestSettings())  # warm up imports and caches
    results: dict[str, object] = {"speed": []}
    for name in args.files:
        row = speed(args.docs / name)
        results["speed"].append(row)  # type: ignore[union-attr]
        print(json.dumps(row, ensure_ascii=False), flush=True)
    if not args.skip_quality:
        paths = sorted(args.docs.glob("*.pdf"))
        if args.scan_limit:
            paths = paths[: args.scan_limit]
        results["quality"] = quality(paths)
        print(json.dumps(results["quality"], ensure_ascii=False), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
