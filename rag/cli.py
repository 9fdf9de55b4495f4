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
from pathlib import Path
from typing import Any

from rag.commands.answering import (
    cmd_ask,
    cmd_chat,
    cmd_eval,
    cmd_mcp,
    cmd_models_list,
    cmd_models_prepare,
    cmd_serve,
)
from rag.commands.documents import (
    cmd_docs_list,
    cmd_docs_remove,
    cmd_ingest,
    cmd_kb_embed,
    cmd_kb_export,
    cmd_kb_help,
    cmd_kb_import,
    cmd_kb_list,
    cmd_kb_migrate,
    cmd_kb_remove,
    cmd_kb_stats,
    cmd_search,
)
from rag.errors import CiteqaError, ConfigError
from rag.settings import FLAT_NAMES, FlatName, Settings, apply_offline_defaults, load_settings

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
    for flat in FLAT_NAMES:  # --home, --embedder, --llm, --store, --store-url: one table with the env names
        if flat.flag is not None:
            g.add_argument(
                flat.flag,
                dest=_flag_dest(flat),
                metavar=flat.metavar,
                default=argparse.SUPPRESS,
                help=f"{flat.help} ({flat.env}).",
            )
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
        p.add_argument(
            "--kb", metavar="NAME", default=None, help="Knowledge base (default: settings paths.default_kb)."
        )

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
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="Return once every file is stored and searchable by keyword; a background `citeqa kb embed` "
        "adds the vectors (dense search) meanwhile.",
    )

    p = add("search", "Show the chunks that best match a question.", cmd_search)
    p.add_argument("question")
    kb_option(p)
    json_option(p)
    p.add_argument("-k", type=int, default=5, help="Number of results (default 5).")
    p.add_argument("--doc", action="append", default=[], metavar="DOC_ID", help="Only search these documents.")
    p.add_argument(
        "--explain",
        action="store_true",
        help="Show per hit its dense and keyword ranks, routed-search ranks, routing match and page score.",
    )

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

    def kb_add(
        name: str, help_text: str, func: Callable[[argparse.Namespace, Settings], int]
    ) -> argparse.ArgumentParser:
        q = kb_sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        q.set_defaults(func=func)
        json_option(q)
        return q

    kb_add("list", "List knowledge bases.", cmd_kb_list)
    kb_add("stats", "Show a knowledge base's size and settings.", cmd_kb_stats).add_argument("name")
    q = kb_add(
        "embed",
        "Embed the chunks still waiting for vectors (after `ingest --no-wait` or an interrupted ingest).",
        cmd_kb_embed,
    )
    q.add_argument("name")
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
    for flat in FLAT_NAMES:
        if flat.flag is not None and hasattr(args, _flag_dest(flat)):
            out[f"{flat.section}.{flat.field}"] = getattr(args, _flag_dest(flat))
    return out


def global_argv(args: argparse.Namespace) -> list[str]:
    """The global options `args` was given, as arguments again (for a background `citeqa` it starts)."""
    out: list[str] = ["--config", str(args.config)] if hasattr(args, "config") else []
    for item in getattr(args, "set", []) or []:
        out += ["--set", item]
    for flat in FLAT_NAMES:
        if flat.flag is not None and hasattr(args, _flag_dest(flat)):
            out += [flat.flag, str(getattr(args, _flag_dest(flat)))]
    return out


def _flag_dest(flat: FlatName) -> str:
    """The namespace attribute of a global flag: its setting's dotted key (`--home` -> `paths.home`)."""
    return f"{flat.section}.{flat.field}"


def _parse_value(raw: str) -> Any:
    """--set values: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config=getattr(args, "config", None), overrides=_overrides(args))
        apply_offline_defaults(settings)  # before any command imports a Hugging Face library
        return int(args.func(args, settings))
    except CiteqaError as exc:
        print(f"citeqa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("citeqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
