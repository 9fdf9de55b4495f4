#!/usr/bin/env python3
"""Fetch the PDFs of the frozen "unseen" evaluation set from Debian packages.

Downloads the exact package versions with `apt-get download pkg=version`,
extracts them with `dpkg-deb -x`, copies only the needed PDFs into a cache
folder and checks each file's sha256. Files already present with the right
hash are left alone. Prints one path per PDF. Python 3 stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# file name -> (package, version, path inside the package, sha256)
DOCS: dict[str, tuple[str, str, str, str]] = {
    "debian-edu-bookworm-manual.pdf": (
        "debian-edu-doc-zh-cn",
        "2.12.23~deb12u1",
        "usr/share/doc/debian-edu-doc-zh-cn/debian-edu-bookworm-manual.pdf",
        "ad8572d784e52cd2fdbd5c54231ddc6dc288f00e26046d941e2378499eb000db",
    ),
    "debian-edu-itil-manual.pdf": (
        "debian-edu-doc-legacy-zh-cn",
        "2.12.23~deb12u1",
        "usr/share/doc/debian-edu-doc-legacy-zh-cn/debian-edu-itil-manual.pdf",
        "ded369ac45050e564910453733baf9cf6789eaf2cc93ec86adeb1e2d63863781",
    ),
    "rosegarden-manual.pdf": (
        "debian-edu-doc-legacy-zh-cn",
        "2.12.23~deb12u1",
        "usr/share/doc/debian-edu-doc-legacy-zh-cn/rosegarden-manual.pdf",
        "46739db498cca83bcab1a910455c96f86b5dcffd6ff78957486d4020d0b88438",
    ),
    "R-admin.pdf": (
        "r-doc-pdf",
        "4.2.2.20221110-2",
        "usr/share/R/doc/manual/R-admin.pdf",
        "50e256b5f873bbee4c8482df3754fa8654f02ef693409fe5e30b2f114e3efe9f",
    ),
    "maint-guide.en.pdf": (
        "maint-guide",
        "1.2.53",
        "usr/share/doc/maint-guide/maint-guide.en.pdf",
        "0b94abf28167fb3fe59db3d03f99b5faa50d9f6f696a7864825c5d0378ba27ef",
    ),
}

DEFAULT_DEST = Path.home() / ".cache" / "citeqa" / "unseen"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{res.stderr.strip()}")


def fetch_package(pkg: str, version: str, work: Path) -> Path:
    """Download and extract one package; return the extraction root."""
    run(["apt-get", "download", f"{pkg}={version}"], work)
    debs = list(work.glob(f"{pkg}_*.deb"))
    if not debs:
        sys.exit(f"error: apt-get produced no .deb for {pkg}={version}")
    root = work / f"x-{pkg}"
    run(["dpkg-deb", "-x", str(debs[0]), str(root)], work)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help=f"cache folder for the PDFs (default: {DEFAULT_DEST})"
    )
    args = ap.parse_args()
    dest: Path = args.dest.expanduser()
    dest.mkdir(parents=True, exist_ok=True)

    # Which files are missing or wrong? Group them by package.
    todo: dict[tuple[str, str], list[str]] = {}
    for name, (pkg, ver, _inner, digest) in DOCS.items():
        target = dest / name
        if not (target.is_file() and sha256(target) == digest):
            todo.setdefault((pkg, ver), []).append(name)

    if todo:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                sys.exit(
                    f"error: '{tool}' not found; run this on a Debian/Ubuntu "
                    "system with apt configured for Debian bookworm"
                )
        with tempfile.TemporaryDirectory(prefix="citeqa-unseen-") as tmp:
            work = Path(tmp)
            for (pkg, ver), names in todo.items():
                root = fetch_package(pkg, ver, work)
                for name in names:
                    src = (root / DOCS[name][2]).resolve()
                    if not src.is_file():
                        sys.exit(f"error: {DOCS[name][2]} not found in {pkg}={ver}")
                    shutil.copyfile(src, dest / name)

    bad = False
    for name, (_pkg, _ver, _inner, digest) in DOCS.items():
        got = sha256(dest / name)
        if got != digest:
            print(f"error: sha256 mismatch for {dest / name}: expected {digest}, got {got}", file=sys.stderr)
            bad = True
        else:
            print(dest / name)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
