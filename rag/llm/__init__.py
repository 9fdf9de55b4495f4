"""LLM backends by name.

`qwen2.5-coder-1.5b` (default), `smollm2-135m` and `*.gguf` paths run in-process with llama.cpp;
`openai:<base-url>[#model]` talks to any OpenAI-compatible server (vLLM, llama.cpp server, FastChat).
"""

from __future__ import annotations

from pathlib import Path

from rag.protocols import Generator
from rag.registry import Registry
from rag.settings import Settings

GENERATORS: Registry[Generator] = Registry("LLM")


@GENERATORS.register("llama-cpp")
def _llama_cpp(argument: str, settings: Settings) -> Generator:
    from rag.llm.llama_cpp import LlamaCppGenerator
    from rag.llm.models import resolve_gguf

    path = resolve_gguf(argument, settings.paths.models_dir)
    return LlamaCppGenerator(path, settings.llm, name=argument)


@GENERATORS.register("openai")
def _openai(argument: str, settings: Settings) -> Generator:
    from rag.llm.openai_compatible import OpenAIGenerator, parse_spec

    base_url, model = parse_spec(argument)
    return OpenAIGenerator(base_url, settings.llm, model)


def generator_spec(name: str) -> str:
    """Map the user-facing LLM name onto a registry spec: a URL is an `openai:` server, a registered
    backend or a `package.module:Factory` path is used as given, anything else is a GGUF for llama.cpp."""
    if name.startswith(("openai:", "http://", "https://")):
        return name if name.startswith("openai:") else f"openai:{name}"
    if GENERATORS.accepts(name):
        return name
    return f"llama-cpp:{name}"


def make_generator(settings: Settings) -> Generator:
    """Create the LLM named by settings.llm.name."""
    return GENERATORS.create(generator_spec(settings.llm.name), settings=settings)


def model_path_for(settings: Settings) -> Path | None:
    """The local GGUF file for the configured LLM, if it is a local one (used by `make models`)."""
    from rag.llm.models import resolve_gguf

    spec = generator_spec(settings.llm.name)
    if not spec.startswith("llama-cpp:"):
        return None
    return resolve_gguf(spec.partition(":")[2], settings.paths.models_dir)
