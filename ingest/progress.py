"""Showing an ingest run to a person: a live progress bar (or plain lines) and the final table.

API (what `citeqa ingest` uses)::

    render = ProgressRenderer(stream=sys.stderr)          # interactive=None: a rich bar when stream is a TTY
    summary = ingest_paths(paths, store, embedder, settings, on_progress=render.update)
    render.finish(summary)                                 # stops the bar, prints the final table

- `ProgressRenderer(stream=sys.stderr, *, interactive=None, interval_s=5.0, list_limit=20)`
  - `interactive`: True forces the rich bar, False plain lines, None decides by `stream.isatty()`.
  - `interval_s`: plain mode prints a heartbeat line at most this often; a line is also printed for
    every file that is added, updated or fails, and when the phase changes (scanning/ingesting/pruning).
  - `list_limit`: how many paths the final table shows per category (failures are always all shown).
- `update(progress: IngestProgress) -> None` — safe to call often (it is the `on_progress` callback).
- `finish(summary: IngestSummary) -> None` — idempotent for the bar; prints the table once.
- Also a context manager: `with ProgressRenderer() as render: ...` stops the bar on errors.

`format_summary(summary, list_limit=20) -> str` gives the plain-text table on its own.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, Self, TextIO

from ingest.pipeline import IngestProgress, IngestSummary
from rag.terminal import safe_text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _display(path: str) -> str:
    """A path relative to the working directory when it is below it, control characters escaped.

    File names are chosen by whoever made the files: a terminal escape sequence in one must show as
    text, not retitle the window or erase the screen.
    """
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        rel = path
    return safe_text(path if rel.startswith("..") else rel)


def progress_line(p: IngestProgress) -> str:
    """One plain line for a progress snapshot."""
    if p.phase == "embedding":
        return (
            f"[embedded {p.embedded:,} of {p.chunks_total:,} chunks] embedding: {p.chunks_per_s:.1f} chunks/s, "
            f"ETA {_duration(p.eta_s)} (every file is stored and searchable by keyword)"
        )
    head = f"[{p.files_done}/{p.files_total}]"
    parts = [
        f"{p.pages:,} pages",
        f"{p.chunks:,} chunks",
        f"{p.chunks_per_s:.1f} chunks/s",
        f"ETA {_duration(p.eta_s)}",
    ]
    if p.failed:
        parts.append(f"{p.failed} failed")
    tail = f"  {_display(p.current)}" if p.current else ""
    return f"{head} {p.phase}: " + ", ".join(parts) + tail


def _totals(s: IngestSummary) -> str:
    skipped = len(s.skipped) + len(s.deduplicated)
    dup = f" ({len(s.deduplicated)} duplicate{'s' if len(s.deduplicated) != 1 else ''})" if s.deduplicated else ""
    pruned = f", pruned {len(s.pruned)}" if s.pruned else ""
    cancelled = " — CANCELLED, run again to finish" if s.cancelled else ""
    rate = f", {s.chunks / s.seconds:.1f} chunks/s" if s.seconds > 0 and s.chunks else ""
    pending = (
        f"\n{s.pending:,} chunks are still waiting for embedding: search finds them by keyword until then"
        if s.pending
        else ""
    )
    return (
        f"added {len(s.added)}, updated {len(s.updated)}, skipped {skipped}{dup}, failed {len(s.failed)}{pruned}"
        f" — {s.chunks:,} chunks from {s.pages:,} pages in {s.seconds:.1f} s{rate}{cancelled}{pending}"
    )


def _rows(s: IngestSummary) -> list[tuple[str, str, str]]:
    """(status, path, detail) rows in display order."""
    rows: list[tuple[str, str, str]] = []
    rows += [("added", p, "") for p in s.added]
    rows += [("updated", p, "replaced the previous version") for p in s.updated]
    rows += [("failed", p, e) for p, e in s.failed]
    rows += [("skipped", p, "same content already stored") for p in s.deduplicated]
    rows += [("skipped", p, "unchanged") for p in s.skipped]
    rows += [("pruned", p, "file is gone") for p in s.pruned]
    return rows


def _limited(rows: list[tuple[str, str, str]], limit: int) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """Keep every failure and at most `limit` rows of each other status; count what was left out."""
    kept: list[tuple[str, str, str]] = []
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for row in rows:
        status = row[0] if row[0] != "skipped" else f"skipped:{row[2]}"
        if row[0] == "failed" or shown.get(status, 0) < limit:
            kept.append(row)
            shown[status] = shown.get(status, 0) + 1
        else:
            hidden[row[0]] = hidden.get(row[0], 0) + 1
    return kept, hidden


def _failure_reason(path: str, error: str) -> str:
    """The error without a leading copy of the path (the table already shows it)."""
    for prefix in (f"{path}: ", f"{os.path.basename(path)}: "):
        if error.startswith(prefix):
            return error[len(prefix) :]
    return error


def format_summary(summary: IngestSummary, list_limit: int = 20) -> str:
    """The final table as plain text: one line per file (failures with their reason), then totals."""
    rows, hidden = _limited(_rows(summary), list_limit)
    width = max((len(r[0]) for r in rows), default=7)
    lines = []
    for status, path, detail in rows:
        if status == "failed":
            detail = safe_text(_failure_reason(path, detail))
        lines.append(f"{status:<{width}}  {_display(path)}" + (f"  — {detail}" if detail else ""))
    for status, n in hidden.items():
        lines.append(f"{status:<{width}}  ... and {n} more")
    lines.append(_totals(summary))
    return "\n".join(lines)


class ProgressRenderer:
    """Progress for `ingest_paths(on_progress=...)`; see the module docstring for the API."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        interval_s: float = 5.0,
        list_limit: int = 20,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.interval_s = interval_s
        self.list_limit = list_limit
        self._progress: Any = None  # rich.progress.Progress while the bar is live
        self._task: Any = None
        self._last_line = 0.0
        self._last_phase = ""
        self._last_done = -1
        self._last_failed = 0
        self._finished = False

    # ------------------------------------------------------------------ live updates
    def update(self, p: IngestProgress) -> None:
        if self._finished:
            return
        if self.interactive:
            self._update_bar(p)
        else:
            self._update_plain(p)

    def _update_plain(self, p: IngestProgress) -> None:
        now = time.monotonic()
        file_event = p.phase == "ingesting" and p.files_done != self._last_done and p.current
        failed_event = p.failed != self._last_failed
        due = now - self._last_line >= self.interval_s
        if p.phase != self._last_phase or file_event or failed_event or due:
            if p.phase == "done":
                return  # finish() prints the totals
            print(progress_line(p), file=self.stream, flush=True)
            self._last_line = now
        self._last_phase = p.phase
        self._last_done = p.files_done
        self._last_failed = p.failed

    def _update_bar(self, p: IngestProgress) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[phase]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]} · {task.fields[pages]} pages · {task.fields[chunks]} chunks"),
                TextColumn("· {task.fields[rate]} chunks/s · ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}", style="dim", markup=False),  # a file name, not markup
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("ingest", total=max(1, p.files_total), **self._fields(p))
        if p.phase == "embedding":  # the second phase: the bar counts the KB's embedded chunks
            total, completed = max(1, p.chunks_total), p.embedded
        else:
            total, completed = max(1, p.files_total), p.files_done
        self._progress.update(self._task, total=total, completed=completed, **self._fields(p))

    @staticmethod
    def _fields(p: IngestProgress) -> dict[str, str]:
        name = safe_text(os.path.basename(p.current))
        return {
            "unit": "chunks embedded" if p.phase == "embedding" else "files",
            "phase": p.phase,
            "pages": f"{p.pages:,}",
            "chunks": f"{p.chunks:,}",
            "rate": f"{p.chunks_per_s:.1f}",
            "eta": _duration(p.eta_s),
            "current": name if len(name) <= 40 else name[:37] + "...",
        }

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        """Stop the live bar (if any) without printing a table."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, summary: IngestSummary) -> None:
        """Stop the bar and print the final table of added / updated / skipped / failed files."""
        self.close()
        if self._finished:
            return
        self._finished = True
        if not self.interactive:
            print(format_summary(summary, self.list_limit), file=self.stream, flush=True)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        styles = {"added": "green", "updated": "cyan", "failed": "red", "skipped": "dim", "pruned": "yellow"}
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("status")
        table.add_column("file", overflow="fold")
        table.add_column("detail", overflow="fold")
        rows, hidden = _limited(_rows(summary), self.list_limit)
        for status, path, detail in rows:
            if status == "failed":
                detail = safe_text(_failure_reason(path, detail))
            # Cells are rich markup: a '[' in a file name must print, not style.
            table.add_row(f"[{styles[status]}]{status}", escape(_display(path)), escape(detail))
        for status, n in hidden.items():
            table.add_row(f"[{styles[status]}]{status}", f"... and {n} more", "")
        console = Console(file=self.stream)
        if rows:
            console.print(table)
        console.print(_totals(summary))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
