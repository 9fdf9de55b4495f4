"""Where ingestion jobs are kept: a small SQLite database, `<CITEQA_HOME>/jobs.sqlite` (mode 0600, WAL).

`Job` is the record, one row per job: what to ingest (kb, kind, paths), where it stands (state,
progress) and how it ended (summary, error). The manager (server.jobs) writes a row at every state
change and, throttled, while progress moves, so a restart finds every job as it was left. Each row
names the process that holds it (`owner`, "host:pid:nonce") and when that process last wrote it
(`updated_at`): a later process can tell a job whose server died from one that another live server
is still running. Passwords are never stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.store.private import make_private_dir, touch_private

QUEUED, RUNNING, INTERRUPTED = "queued", "running", "interrupted"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
UNFINISHED = (QUEUED, RUNNING, INTERRUPTED)
STATES = (QUEUED, RUNNING, INTERRUPTED, SUCCEEDED, FAILED, CANCELLED)

FILE_NAME = "jobs.sqlite"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: listings are newest first
    id TEXT NOT NULL UNIQUE,
    kb TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc_id TEXT,                            -- the document a reingest replaces
    paths TEXT NOT NULL,                    -- JSON list of server paths
    state TEXT NOT NULL,
    progress TEXT NOT NULL,                 -- JSON
    summary TEXT,                           -- JSON
    error TEXT,
    files_failed INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,     -- times restarted after the server stopped mid-job
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',         -- "host:pid:nonce" of the job manager that holds it
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_kb ON jobs(kb, seq);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, finished_at);
"""

COLUMNS = (
    "id",
    "kb",
    "kind",
    "doc_id",
    "paths",
    "state",
    "progress",
    "summary",
    "error",
    "files_failed",
    "resumed",
    "cancel_requested",
    "owner",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
_JSON = {"paths", "progress", "summary"}


@dataclass
class Job:
    """One ingestion job and what is known about it so far."""

    id: str
    kb: str
    paths: list[str]
    kind: str = "ingest"  # "ingest" | "reingest"
    doc_id: str | None = None  # the document a reingest replaces
    state: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: str | None = None
    files_failed: int = 0
    resumed: int = 0  # times it was started again after its server stopped mid-job
    cancel_requested: bool = False  # by a client (a shutdown stops a job without this)
    seq: int = 0
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    password: str | None = field(default=None, repr=False)  # for encrypted PDFs; never stored nor reported

    def to_dict(self) -> dict[str, Any]:
        """The API's view (JobOut): file names, never server paths."""
        return {
            "id": self.id,
            "kb": self.kb,
            "kind": self.kind,
            "state": self.state,
            "files": [Path(p).name for p in self.paths],
            "files_failed": self.files_failed,
            "resumed": self.resumed,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": self.progress,
            "summary": self.summary,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
        }

    def row(self, owner: str) -> dict[str, Any]:
        """The job as the jobs database keeps it (no password, no event)."""
        skip = {"seq", "cancel_event", "password"}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {**out, "owner": owner, "updated_at": time.time()}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        names = {f.name for f in dataclasses.fields(cls)} - {"cancel_event", "password"}
        return cls(**{k: v for k, v in row.items() if k in names})


LIVE_OWNERS: set[str] = set()  # the owner names of this process's running job managers


def new_owner() -> str:
    """A name for one job manager: "host:pid:nonce" (the nonce tells apart two managers of one process,
    and this process from an earlier one of the same pid); registered in LIVE_OWNERS."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    LIVE_OWNERS.add(owner)
    return owner


def owner_is_gone(owner: str, updated_at: float, *, stale_s: float, now: float | None = None) -> bool:
    """Whether the job manager that holds a job is no longer running it.

    On this host the pid answers; for our own pid, whether that manager still runs in this process (else
    it was an earlier process of the same pid, e.g. pid 1 in a restarted container). Another host's
    manager is taken for gone once it has not written the row for `stale_s` (live ones refresh theirs).
    """
    host, pid_text, _nonce = ([*owner.rsplit(":", 2), "", ""])[:3]
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return owner not in LIVE_OWNERS
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another account
            return False
        return False
    return (time.time() if now is None else now) - updated_at > stale_s


class JobStore:
    """The jobs table of one CITEQA_HOME; safe to share between threads (one connection, one lock)."""

    def __init__(self, home: Path) -> None:
        make_private_dir(Path(home))
        self.path = Path(home) / FILE_NAME
        touch_private(self.path)  # created 0600 before SQLite opens it: its -wal and -shm files get the same mode
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._db().executescript(SCHEMA)
            self._db().execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _db(self) -> sqlite3.Connection:
        """The connection (callers hold the lock), opened again after `close` for a late write."""
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: a kill never half-applies a write
            conn.execute("PRAGMA busy_timeout=30000")  # two servers on one home share the file
            self._conn = conn
        return self._conn

    # --- writes --------------------------------------------------------------------------------
    def save(self, row: dict[str, Any]) -> int:
        """Insert or update the job `row["id"]` (every column of COLUMNS); returns its `seq`."""
        values = [json.dumps(row[c], ensure_ascii=False) if c in _JSON else row[c] for c in COLUMNS]
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS if c not in {"id", "created_at"})
        with self._lock:
            db = self._db()
            db.execute(
                f"INSERT INTO jobs({names}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}",
                values,
            )
            (seq,) = db.execute("SELECT seq FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return int(seq)

    def touch(self, job_ids: Iterable[str], owner: str) -> None:
        """Say that `owner` still holds these jobs (the heartbeat other servers judge staleness by)."""
        ids = list(job_ids)
        if not ids:
            return
        with self._lock:
            self._db().execute(
                f"UPDATE jobs SET updated_at = ?, owner = ? WHERE id IN ({', '.join('?' * len(ids))})",
                [time.time(), owner, *ids],
            )

    def claim(self, job_id: str, *, state: str, owner: str, to: str) -> bool:
        """Take job `job_id` over if it is still in `state` held by `owner` (so two servers never both do)."""
        with self._lock:
            cursor = self._db().execute(
                "UPDATE jobs SET owner = ?, updated_at = ? WHERE id = ? AND state = ? AND owner = ?",
                (to, time.time(), job_id, state, owner),
            )
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> None:
        """Record a client's cancel of a job another server holds (honoured if it is ever resumed)."""
        with self._lock:
            self._db().execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def expire(self, older_than: float) -> int:
        """Forget finished jobs that ended before the timestamp `older_than`; returns how many."""
        with self._lock:
            cursor = self._db().execute(
                f"DELETE FROM jobs WHERE state IN ({', '.join('?' * len(FINISHED))}) AND finished_at < ?",
                [*sorted(FINISHED), older_than],
            )
        return cursor.rowcount

    # --- reads ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db().execute(f"SELECT seq, {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _decode(row) if row is not None else None

    def page(
        self,
        *,
        kb: str | None = None,
        kbs: Collection[str] | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of jobs, newest first, and how many match in all (`kbs`: only these knowledge bases)."""
        where: list[str] = []
        args: list[Any] = []
        if kb is not None:
            where.append("kb = ?")
            args.append(kb)
        if kbs is not None:
            where.append(f"kb IN ({', '.join('?' * len(kbs))})")  # SQLite accepts an empty list: no rows
            args.extend(sorted(kbs))
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            db = self._db()
            (total,) = db.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()
            rows = db.execute(
                f"SELECT seq, {', '.join(COLUMNS)} FROM jobs{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_decode(r) for r in rows], int(total)

    def unfinished(self) -> list[dict[str, Any]]:
        """Jobs queued, running or interrupted (by any process), oldest first."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT seq, {', '.join(COLUMNS)} FROM jobs WHERE state IN (?, ?, ?) ORDER BY seq", UNFINISHED
                )
                .fetchall()
            )
        return [_decode(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _decode(row: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": row[0]}
    for name, value in zip(COLUMNS, row[1:], strict=True):
        out[name] = json.loads(value) if name in _JSON and value is not None else value
    out["cancel_requested"] = bool(out["cancel_requested"])
    return out
