"""A job's progress as clients see it: the pipeline's IngestProgress as JSON, and the share done.

The share (`ratio`) moves inside a file too, from the chunks embedded so far, so a one-file job does
not sit at 0 until its file is written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def initial_progress(files: int) -> dict[str, Any]:
    """A job's progress before the pipeline has reported anything."""
    return {"files_total": files, "files_done": 0, "ratio": 0.0}


def progress_to_dict(progress: Any) -> dict[str, Any]:
    """Whatever the pipeline reports (a dataclass or an object) as plain JSON values."""
    if dataclasses.is_dataclass(progress) and not isinstance(progress, type):
        raw = dataclasses.asdict(progress)
    elif isinstance(progress, dict):
        raw = dict(progress)
    else:
        raw = {k: v for k, v in vars(progress).items() if not k.startswith("_")}
    return {k: jsonable(v) for k, v in raw.items()}


def jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return str(value)


# Of a job whose files are written first and embedded after (ingest.embedqueue), the share of time the
# first phase takes: parsing runs at ~150 pages per CPU-second, embedding at ~5-9 chunks/s here, so
# writing every file is a few percent of the whole (1.5% on the 53-PDF bench corpus).
STORED_SHARE = 0.05


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def share_done(progress: dict[str, Any]) -> float | None:
    """The share of a job done (0..1), moving inside a file too, not only when a file finishes.

    Files that need no parsing (unchanged, duplicates) are done at scan time; for the files being
    parsed and embedded, the share of their chunks done is `chunks / (chunks + left)`, where the
    pipeline's chunks still expected are `eta_s * chunks_per_s` (its ETA is chunks left over rate).
    """
    if progress.get("phase") == "embedding":
        embedded, left = _number(progress.get("chunks")) or 0.0, _number(progress.get("eta_s"))
        rate = _number(progress.get("chunks_per_s")) or 0.0
        if left is None or rate <= 0:
            return STORED_SHARE
        share = embedded / (embedded + left * rate) if embedded + left * rate > 0 else 1.0
        return min(1.0, STORED_SHARE + (1 - STORED_SHARE) * share)
    files = _files_share(progress)
    if files is not None and progress.get("embedding_follows"):
        return STORED_SHARE * files
    return files


def _files_share(progress: dict[str, Any]) -> float | None:
    done, total = _number(progress.get("files_done")), _number(progress.get("files_total"))
    if done is None or total is None or total <= 0:
        return None
    ratio = done / total
    chunks, rate, eta = (_number(progress.get(k)) for k in ("chunks", "chunks_per_s", "eta_s"))
    to_parse = _number(progress.get("to_parse"))
    if chunks is not None and rate and eta is not None and to_parse:
        left = max(0.0, eta * rate)
        share = chunks / (chunks + left) if chunks + left > 0 else 0.0
        ratio = max(ratio, (total - to_parse + to_parse * share) / total)
    return min(1.0, ratio)
