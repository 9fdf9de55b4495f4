"""Golden files for behaviour-preserving refactors: record before a move, compare after.

    .venv/bin/python scripts/golden.py record DIR [--code CHECKOUT] [--backends faiss,pgvector,milvus]
    .venv/bin/python scripts/golden.py compare BEFORE AFTER

What is recorded (one file each under DIR):
- help.txt: `citeqa --help` and the help of every command and sub-command;
- spans.json: the parsed page text's sentence spans (rag.text) of samples/ and five bench PDFs;
- chunks.json: the chunker's output (ids, pages, text hashes) for the same documents;
- export_<backend>.json: samples/ ingested into a fresh KB on each backend (pgvector and Milvus
  started as the tests start them), every document and chunk with a hash of its vector.

`--code` records with another checkout's `rag`/`ingest` (e.g. a worktree of the commit before the
change) so both sides come from one session on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench" / "docs"
BENCH_DOCS = [
    "financebench__ULTABEAUTY_2023Q4_EARNINGS.pdf",
    "financebench__JOHNSON_JOHNSON_2023_8K_dated-2023-08-30.pdf",
    "docugami_10q__2023_Q3_AAPL.pdf",
    "cmrc2018_zhwiki_vol01.pdf",
    "cmrc2018_zhwiki_vol02.pdf",
]


def _docs() -> list[Path]:
    docs = sorted((REPO / "samples").glob("*.pdf"))
    return docs + [BENCH / name for name in BENCH_DOCS if (BENCH / name).exists()]


def _sha(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def record_help(out: Path) -> None:
    from rag.cli import build_parser

    parts: list[str] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        parts.append(f"===== {name}\n{parser.format_help()}")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in sorted(action.choices.items()):
                    walk(child, f"{name} {sub}")

    walk(build_parser(), "citeqa")
    (out / "help.txt").write_text("\n".join(parts), encoding="utf-8")


def record_text(out: Path) -> None:
    from ingest.parsers import parse_file
    from rag.chunking import make_chunker
    from rag.settings import load_settings
    from rag.text.sentences import split_sentences

    settings = load_settings()
    chunker = make_chunker(settings.chunking, lambda t: len(t.split()) + len(t) // 4)
    spans: dict[str, Any] = {}
    chunks: dict[str, Any] = {}
    for path in _docs():
        doc = parse_file(path, settings.ingest)
        spans[path.name] = [
            {"page": p.number, "text": _sha(p.text), "spans": split_sentences(p.text)} for p in doc.pages
        ]
        chunks[path.name] = [
            {"id": c.id, "pages": [c.page_start, c.page_end], "text": _sha(c.text)}
            for c in chunker.chunk(doc, doc.sha256[:16] if doc.sha256 else _sha(path.read_bytes()))
        ]
    (out / "spans.json").write_text(json.dumps(spans, indent=1), encoding="utf-8")
    (out / "chunks.json").write_text(json.dumps(chunks, indent=1), encoding="utf-8")


@contextlib.contextmanager
def _backend_url(backend: str, tmp: Path) -> Iterator[str | None]:
    if backend == "faiss":
        yield None
        return
    sys.path.insert(0, str(REPO / "tests"))
    import scale_servers  # type: ignore[import-not-found]

    if backend == "pgvector":
        with scale_servers.postgres_server(tmp / "pg") as url:
            yield url
    else:
        yield str(tmp / "milvus.db")


def record_export(out: Path, backend: str) -> None:
    from ingest.pipeline import ingest_paths
    from rag.embedders import make_embedder
    from rag.kb import open_kb
    from rag.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="citeqa-golden-") as raw:
        tmp = Path(raw)
        with _backend_url(backend, tmp) as url:
            overrides: dict[str, Any] = {"paths.home": tmp / "home", "store.backend": backend}
            if url:
                overrides["store.url"] = url
            settings = load_settings(overrides=overrides)
            embedder = make_embedder(settings.embedder)
            store = open_kb(settings, "golden", embedder, create=True)
            try:
                ingest_paths([REPO / "samples"], store, embedder, settings, workers=1)
                docs = []
                for info in sorted(store.list_documents(), key=lambda d: d.id):
                    docs.append({"id": info.id, "title": info.title, "pages": info.pages, "chunks": info.chunks})
                rows = []
                for chunks, vectors in store.iter_vectors():
                    for c, vec in zip(chunks, vectors, strict=True):
                        rows.append(
                            {
                                "id": c.id,
                                "doc": c.doc_id,
                                "pages": [c.page_start, c.page_end],
                                "chars": [c.char_start, c.char_end],
                                "section": c.section,
                                "text": _sha(c.text),
                                "vector": _sha(vec.round(4).tobytes()),
                            }
                        )
                rows.sort(key=lambda r: r["id"])
            finally:
                store.close()
    (out / f"export_{backend}.json").write_text(json.dumps({"documents": docs, "vectors": rows}, indent=1))


def compare(before: Path, after: Path) -> int:
    bad = 0
    for path in sorted(before.iterdir()):
        other = after / path.name
        if not other.exists():
            print(f"missing after: {path.name}")
            bad += 1
        elif other.read_bytes() != path.read_bytes():
            print(f"DIFFERS: {path.name}")
            bad += 1
        else:
            print(f"same: {path.name}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="Write the golden files into DIR.")
    r.add_argument("dir", type=Path)
    r.add_argument("--code", type=Path, default=None, help="Record with this checkout's code.")
    r.add_argument("--backends", default="faiss", help="Comma-separated: faiss,pgvector,milvus.")
    r.add_argument("--only", default="help,text,export", help="Which parts: help,text,export.")
    c = sub.add_parser("compare", help="Compare two golden directories file by file.")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.cmd == "compare":
        return compare(args.before, args.after)
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    args.dir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    with contextlib.redirect_stderr(io.StringIO()):
        if "help" in only:
            record_help(args.dir)
        if "text" in only:
            record_text(args.dir)
    if "export" in only:
        for backend in args.backends.split(","):
            record_export(args.dir, backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
