"""Commands over knowledge bases and documents: ingest, search, kb ..., docs ...."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from rag.commands.common import kb_name, open_store, print_json, report
from rag.errors import ConfigError
from rag.settings import Settings


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import ingest_paths
    from ingest.progress import ProgressRenderer
    from rag.terminal import safe_text

    paths = [Path(p) for p in args.paths]
    # A missing path fails alone (one line in the summary, from discovery) and the batch goes on;
    # only when nothing given exists is there no batch, and no knowledge base is created for it.
    if not any(p.expanduser().exists() for p in paths):
        raise ConfigError(f"no such file or folder: {', '.join(safe_text(str(p)) for p in paths)}")
    store, embedder = open_store(settings, kb_name(args, settings), create=True)
    renderer = ProgressRenderer(stream=sys.stderr)
    try:
        summary = ingest_paths(
            paths,
            store,
            embedder,
            settings,
            workers=args.workers,
            glob=args.glob,
            prune=args.prune,
            password=args.password,
            on_progress=renderer.update,
            wait=args.wait,
        )
        kb = store.name
    finally:
        store.close()
    renderer.finish(summary)
    if summary.pending and not args.wait and not summary.cancelled:
        _embed_in_background(args, settings, kb)
    if args.json:
        print_json(summary.to_json())
    return 3 if args.strict and summary.to_json()["failed"] else 0


def _embed_in_background(args: argparse.Namespace, settings: Settings, kb: str) -> None:
    """Start `citeqa kb embed KB` detached (own session: it outlives this terminal), logging to the home."""
    import subprocess

    from ingest.embedqueue import lock_path
    from rag.cli import global_argv

    log = lock_path(settings, kb).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "rag.cli", *global_argv(args), "kb", "embed", kb]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    print(
        f"citeqa: embedding in the background (pid {proc.pid}, log {log}); "
        f"`citeqa kb stats {kb}` shows how many chunks are embedded",
        file=sys.stderr,
    )


def cmd_kb_embed(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import embed_pending
    from ingest.progress import ProgressRenderer

    store, embedder = open_store(settings, args.name)
    renderer = ProgressRenderer(stream=sys.stderr)
    try:
        summary = embed_pending(store, embedder, settings, on_progress=renderer.update)
    finally:
        store.close()
    renderer.close()
    data = {"kb": args.name, "embedded": summary.embedded, "pending": summary.pending,
            "seconds": round(summary.seconds, 1), "cancelled": summary.cancelled}  # fmt: skip
    report(args, data)
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from rag.protocols import SearchFilter
    from rag.retrieval import explain_hit, hit_to_dict, make_retriever

    store, embedder = open_store(settings, kb_name(args, settings))
    try:
        from rag.llm import make_generator

        # The LLM loads only if a cross-language question needs translating (retrieval.query_translation).
        retriever = make_retriever(store, embedder, settings.retrieval, generator=lambda: make_generator(settings))
        result = retriever.retrieve(args.question, args.k, SearchFilter(doc_ids=args.doc) if args.doc else None)
    finally:
        store.close()
    rows = [hit_to_dict(h) for h in result.hits]
    if args.json:
        print_json(rows)
        return 0
    if result.no_evidence:
        print("(no chunk passes the relevance floor; the closest ones follow)")
    if result.unembedded:
        print(f"({result.unembedded:,} chunks are still being embedded: until then they are found by keyword only)")
    for i, row in enumerate(rows, 1):
        text = " ".join(str(row["text"]).split())
        print(f"{i}. {row['doc']} · p.{row['page']} · score {row['score']:.3f}\n   {text[:300]}")
        if getattr(args, "explain", False):
            print(f"   why: {explain_hit(row['scores'])}")
    if not rows:
        print("no results")
    return 0


def cmd_kb_help(args: argparse.Namespace, settings: Settings) -> int:  # pragma: no cover - argparse requires an action
    return 2


def cmd_kb_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import list_kbs

    names = list_kbs(settings)
    if args.json:
        print_json(names)
    else:
        print("\n".join(names) if names else f"no knowledge bases under {settings.paths.home}")
    return 0


def cmd_kb_stats(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import open_kb

    store = open_kb(settings, args.name)  # no embedder needed to read stats
    try:
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        print_json(stats)
    else:
        for key, value in stats.items():
            if key == "embedded" and "chunks" in stats:
                value = f"{value:,} of {stats['chunks']:,} chunks"  # the rest are searchable by keyword only
            print(f"{key:>14}: {value}")
    return 0


def cmd_kb_remove(args: argparse.Namespace, settings: Settings) -> int:
    from rag.errors import InvalidRequest
    from rag.kb import kb_exists, remove_kb

    if not args.yes and kb_exists(settings, args.name):  # a missing or invalid name: remove_kb's own error
        # Deleting cannot be undone: ask a person; a script must say --yes rather than delete by default.
        if sys.stdin is None or not sys.stdin.isatty():
            raise InvalidRequest(
                f"kb remove {args.name}: not deleting without confirmation; stdin is not a terminal, pass --yes"
            )
        sys.stderr.write(f"Delete knowledge base {args.name!r} and everything in it? This cannot be undone. [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
            print(f"citeqa: kept knowledge base {args.name}", file=sys.stderr)
            return 1
    remove_kb(settings, args.name)
    if args.json:
        print_json({"removed": args.name})
    else:
        print(f"removed knowledge base {args.name}")
    return 0


def cmd_kb_export(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import open_kb
    from rag.store.migrate import export_kb

    store = open_kb(settings, args.name)
    try:
        result = export_kb(store, args.file)
    finally:
        store.close()
    report(args, {"exported": args.name, "file": str(args.file), "result": result})
    return 0


def cmd_kb_import(args: argparse.Namespace, settings: Settings) -> int:
    from rag.store.migrate import import_kb

    name = kb_name(args, settings)
    result = import_kb(settings, name, args.file)
    report(args, {"imported": name, "file": str(args.file), "result": result})
    return 0


def cmd_kb_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rag.store.migrate import migrate_to

    # Vectors are copied as they are: no embedder is loaded, so any KB can move to any backend.
    result = migrate_to(settings, args.name, args.to, args.url, target_name=args.target_name)
    report(args, {"migrated": args.name, "to": args.to, "result": result})
    return 0


def cmd_docs_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import open_kb

    store = open_kb(settings, kb_name(args, settings))
    try:
        docs = store.list_documents()
    finally:
        store.close()
    if args.json:
        print_json([asdict(d) for d in docs])
        return 0
    from rag.terminal import safe_text

    for d in docs:  # names and titles come from files: escape control characters (JSON above stays exact)
        title, source = safe_text(d.title or d.source), safe_text(d.source)
        print(f"{d.id}  {d.pages:>5} pages  {d.chunks:>6} chunks  {title}  ({source})")
    if not docs:
        print("no documents")
    return 0


def cmd_docs_remove(args: argparse.Namespace, settings: Settings) -> int:
    from rag.errors import DocumentNotFound
    from rag.kb import open_kb

    store = open_kb(settings, kb_name(args, settings))
    removed: list[str] = []
    try:
        for ident in args.ids:
            doc = store.find_by_path(str(Path(ident).resolve())) if Path(ident).exists() else None
            doc_id = doc.id if doc is not None else ident
            store.get_document(doc_id)  # raises DocumentNotFound with the id in the message
            store.remove_document(doc_id)
            removed.append(doc_id)
    except DocumentNotFound:
        raise
    finally:
        store.close()
    if args.json:
        print_json({"removed": removed})
    else:
        print("removed " + ", ".join(removed))
    return 0
