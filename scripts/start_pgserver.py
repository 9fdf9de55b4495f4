"""Start a throwaway PostgreSQL 16 + pgvector server from the `pgserver` wheel and print its URL.

    python scripts/start_pgserver.py DATA_DIR            # prints postgresql://...?host=DATA_DIR; keeps running
    CITEQA_STORE=pgvector CITEQA_STORE_URL="$(...)" citeqa ingest ...

The server listens on a Unix socket only (no TCP port). As root, pgserver runs PostgreSQL as a
system user `pgserver` it creates and makes DATA_DIR's parent folders traversable (chmod g+rx,o+rx):
keep DATA_DIR inside a scratch tree. `--stop` stops a server started on DATA_DIR earlier.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def start(data_dir: Path, *, cleanup: str | None = "stop") -> str:
    """Start (or reuse) the server whose data lives in `data_dir`; return its connection URL."""
    import warnings

    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise SystemExit("pgserver is not installed: pip install pgserver") from exc
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=cleanup)
    url = server.get_uri()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def stop(data_dir: Path) -> None:
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir.resolve(), user=user)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--stop", action="store_true", help="Stop the server running on DATA_DIR.")
    parser.add_argument("--detach", action="store_true", help="Print the URL and exit, leaving the server running.")
    args = parser.parse_args(argv)
    if args.stop:
        stop(args.data_dir)
        return 0
    url = start(args.data_dir, cleanup=None if args.detach else "stop")
    print(url, flush=True)
    if args.detach:
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
