"""Helpers every command uses: the KB name, JSON output, opening a KB, the summary report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from rag.settings import Settings


def kb_name(args: argparse.Namespace, settings: Settings) -> str:
    return getattr(args, "kb", None) or settings.paths.default_kb


def print_json(data: Any, out: TextIO | None = None) -> None:
    # sys.stdout looked up per call, not bound at import: tests and callers may redirect it later.
    (out or sys.stdout).write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def open_store(settings: Settings, name: str, *, create: bool = False):  # type: ignore[no-untyped-def]
    """Open a knowledge base with the configured embedder (the manifest check refuses a mismatch)."""
    from rag.embedders import make_embedder
    from rag.kb import open_kb

    embedder = make_embedder(settings.embedder)
    return open_kb(settings, name, embedder, create=create), embedder


def report(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        print_json(data)
    else:
        print(", ".join(f"{k}: {v}" for k, v in data.items() if v is not None))
