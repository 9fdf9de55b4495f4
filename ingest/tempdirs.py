"""multiprocessing's temporary folder, named after the process so a killed run's folder can be swept.

Every process that starts a forkserver gets a `pymp-XXXX` folder in /tmp (the server's socket lives
there). It is removed at a normal exit, never after kill -9 or an OOM kill: a machine that ingests
for months collects thousands. Ours are `pymp-citeqa-<pid>-XXXX`; the next run removes those whose
process is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import tempfile
from multiprocessing import util
from pathlib import Path

PREFIX = "pymp-citeqa-"
_NAME = re.compile(rf"{re.escape(PREFIX)}(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not ours to judge
        return True
    return True


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove our temporary folders whose process no longer runs; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        m = _NAME.match(folder.name)
        if not m or not folder.is_dir() or folder.stat().st_uid != os.getuid() or _alive(int(m.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def use_named_temp_dir() -> str:
    """Give this process's multiprocessing a temp folder named after its pid (once), sweeping stale ones."""
    config = multiprocessing.current_process()._config  # where util.get_temp_dir() looks first
    if config.get("tempdir"):
        return str(config["tempdir"])
    sweep_stale()
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    # The same clean-up util.get_temp_dir() registers for its own folder, at a normal exit.
    util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
    config["tempdir"] = folder
    return folder
