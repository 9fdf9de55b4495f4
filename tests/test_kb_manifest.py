"""A knowledge base's manifest records the chunker and analyzer that made it; opening checks them (issue 18 item 4)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from rag.chunking import CHUNKER_VERSION
from rag.chunking.context import HEADER_SCHEME
from rag.cli import build_parser
from rag.embedders import make_embedder
from rag.errors import IndexMismatch
from rag.kb import open_kb
from rag.settings import Settings, load_settings
from rag.store.manifest import ANALYZER_VERSION


def _manifest_path(settings: Settings, name: str) -> Path:
    return Path(settings.paths.home) / name / "manifest.json"


def _edit_manifest(settings: Settings, name: str, **changes: object) -> None:
    path = _manifest_path(settings, name)
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture
def fake(fake_settings: Settings):  # type: ignore[no-untyped-def]
    return make_embedder(fake_settings.embedder)


@pytest.fixture
def kb(fake_settings: Settings, fake) -> str:  # type: ignore[no-untyped-def]
    open_kb(fake_settings, "kb1", fake, create=True).close()
    return "kb1"


def _commands_in(message: str) -> list[list[str]]:
    """The `citeqa ...` commands quoted in backticks in an error message."""
    parts = message.split("`")[1::2]
    return [shlex.split(p)[1:] for p in parts if p.startswith("citeqa ")]


def test_new_kb_records_chunker_version_settings_and_analyzer(fake_settings: Settings, kb: str) -> None:
    data = json.loads(_manifest_path(fake_settings, kb).read_text())
    expected = {**fake_settings.chunking.model_dump(), "headers": HEADER_SCHEME, "version": CHUNKER_VERSION}
    assert data["chunker"] == expected
    assert data["analyzer"] == ANALYZER_VERSION


def test_other_chunking_settings_are_refused_with_a_real_reindex_command(
    fake_settings: Settings, fake, kb: str
) -> None:  # type: ignore[no-untyped-def]
    other = load_settings(
        overrides={"paths.home": fake_settings.paths.home, "embedder.name": "fake", "chunking.max_tokens": 200}
    )
    with pytest.raises(IndexMismatch) as err:
        open_kb(other, kb, fake)
    message = str(err.value)
    from server.errors import status_for

    assert status_for(err.value) == 409  # a conflict with what the KB holds, like another embedder
    assert "max_tokens=320" in message and "max_tokens=200" in message
    assert "--set chunking.max_tokens=320" in message
    commands = _commands_in(message)
    assert [c[:2] for c in commands] == [["kb", "remove"], ["ingest", "PATH"]]
    for argv in commands:  # the commands the message names exist and parse as written
        build_parser().parse_args(argv)
    open_kb(fake_settings, kb, fake).close()  # the KB's own settings still open it


def test_another_recorded_chunker_version_is_refused(fake_settings: Settings, fake, kb: str) -> None:  # type: ignore[no-untyped-def]
    _edit_manifest(fake_settings, kb, chunker={**fake_settings.chunking.model_dump(), "version": CHUNKER_VERSION + 1})
    with pytest.raises(IndexMismatch, match=f"chunker version {CHUNKER_VERSION + 1}.*citeqa kb remove kb1"):
        open_kb(fake_settings, kb, fake)


def test_another_analyzer_version_is_refused_even_for_reading(fake_settings: Settings, fake, kb: str) -> None:  # type: ignore[no-untyped-def]
    _edit_manifest(fake_settings, kb, analyzer=ANALYZER_VERSION + 1)
    with pytest.raises(IndexMismatch, match="keyword analyzer version"):
        open_kb(fake_settings, kb)
    _edit_manifest(fake_settings, kb, analyzer=None)  # no field: written by analyzer version 1
    open_kb(fake_settings, kb).close()


def test_kb_from_before_chunker_versions_opens_for_reading_but_not_for_ingest(
    fake_settings: Settings, fake, kb: str
) -> None:  # type: ignore[no-untyped-def]
    _edit_manifest(fake_settings, kb, chunker=fake_settings.chunking.model_dump(), analyzer=None)
    store = open_kb(fake_settings, kb, fake)  # reading: stored chunks are exact page text, whatever the boundaries
    assert store.stats() is not None
    store.close()
    with pytest.raises(IndexMismatch, match="chunker version 1.*to add documents, re-index"):
        open_kb(fake_settings, kb, fake, create=True)


def test_server_does_not_ingest_into_an_old_kb_it_opened_for_reading(
    fake_settings: Settings, fake, kb: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The server caches open stores: a query may open an old KB first; a later upload must still be refused."""
    import threading

    from server.state import AppState

    _edit_manifest(fake_settings, kb, chunker=fake_settings.chunking.model_dump(), analyzer=None)
    state = AppState(fake_settings, embedder=fake)
    try:
        assert state.store(kb).stats()["documents"] == 0  # opened for reading, now cached
        note = tmp_path / "note.txt"
        note.write_text("Revenue grew.")
        with pytest.raises(IndexMismatch, match="chunker version 1"):
            state.run_ingest(
                kb, [note], replace=None, password=None, on_progress=lambda p: None, cancel=threading.Event()
            )
        assert state.store(kb).stats()["documents"] == 0
    finally:
        state.close()


def test_a_kb_without_chunk_headers_is_read_but_not_written_into(fake_settings: Settings, fake, kb: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_manifest_path(fake_settings, kb).read_text())
    data["chunker"].pop("headers")  # as a KB made before headers records it
    _manifest_path(fake_settings, kb).write_text(json.dumps(data))
    open_kb(fake_settings, kb, fake).close()  # searching and asking work
    with pytest.raises(IndexMismatch, match="without chunk headers.*chunking.headers=false") as err:
        open_kb(fake_settings, kb, fake, create=True)
    assert ["kb", "remove", kb, "--yes"] in _commands_in(str(err.value))
    off = fake_settings.model_copy(deep=True)
    off.chunking.headers = False
    open_kb(off, kb, fake, create=True).close()  # the KB's own setting writes
