"""Commands that answer or serve: ask, chat, eval, serve, mcp, models ...."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, TextIO

from rag.commands.common import kb_name, open_store, print_json
from rag.errors import CiteqaError, ConfigError
from rag.settings import Settings


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the sys.stderr of the moment, not the one of the first command: a later `main()` in the
    same process (tests, a program embedding the CLI) may have redirected it, or closed the old one."""

    _citeqa_cli = True

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def _progress_to_stderr() -> None:
    """Waits longer than a second say what they are (preparing or loading a model): the library logs
    them on the `citeqa` logger; interactive commands print them (`serve` has its own log format)."""
    logger = logging.getLogger("citeqa")
    if not any(getattr(h, "_citeqa_cli", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("citeqa: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _make_pipeline(settings: Settings, kb: str):  # type: ignore[no-untyped-def]
    from rag.llm import make_generator
    from rag.pipeline import QAPipeline

    _progress_to_stderr()
    store, embedder = open_store(settings, kb)
    return QAPipeline(store, embedder, make_generator(settings), settings), store


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag.pipeline import answer_to_dict
    from rag.protocols import SearchFilter

    pipeline, store = _make_pipeline(settings, kb_name(args, settings))
    flt = SearchFilter(doc_ids=args.doc) if args.doc else None
    try:
        if args.json:
            answer = pipeline.ask(args.question, flt=flt)
            print_json(answer_to_dict(answer))
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
    return run_chat(settings, kb_name(args, settings), stdin=sys.stdin, stdout=sys.stdout)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag.eval import run_eval
    from rag.eval_report import eval_markdown

    if not args.questions.is_file():
        raise ConfigError(f"questions file {args.questions} does not exist")
    kwargs: dict[str, Any] = {"answers": args.answers}
    if args.limit is not None:
        kwargs["limit"] = args.limit
    result = run_eval(settings, kb_name(args, settings), args.questions, **kwargs)
    markdown = eval_markdown(result)
    if args.report is not None:
        args.report.write_text(markdown, encoding="utf-8")
    if args.json:
        print_json(result)
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
        print_json(rows)
        return 0
    build = rows["llama_cpp"]
    if build.get("installed"):
        rows["llama_cpp"] = (
            f"llama-cpp-python {build['version']}, {build['build']} build ({' '.join(build['cpu_features'])})"
        )
    else:
        rows["llama_cpp"] = "not installed (run `make install`)"
    if isinstance(rows.get("prefill"), dict):
        p = rows["prefill"]
        rows["prefill"] = (
            f"{p['tokens_per_s']:.0f} prompt tokens/s ({p['probe_tokens']:.0f}-token probe, {settings.llm.name})"
        )
    for k, v in rows.items():
        print(f"{k:>20}: {v}")
    return 0
