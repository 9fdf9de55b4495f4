"""Knowledge bases by name: open, create, list and remove them on the configured store backend.

The backend is chosen by settings.store.backend (`CITEQA_STORE`), see rag/store/__init__.py.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rag.chunking import CHUNKER_VERSION, chunker_manifest
from rag.errors import IndexMismatch, InvalidRequest, KnowledgeBaseNotFound
from rag.protocols import Embedder, Store
from rag.settings import Settings
from rag.store import get_backend
from rag.store.manifest import ANALYZER_VERSION, Manifest

log = logging.getLogger("citeqa.kb")

# Letters (any script), digits, '_', '-', '.'; must start with a letter or digit ('_models' is reserved).
_NAME_RE = re.compile(r"[^\W_][\w.-]{0,63}")


def validate_kb_name(name: str) -> str:
    """Return `name` if it is a safe knowledge-base name, else raise InvalidRequest."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def open_kb(
    settings: Settings,
    name: str,
    embedder: Embedder | None = None,
    *,
    create: bool = False,
    embedder_id: str | None = None,
    dim: int | None = None,
) -> Store:
    """Open knowledge base `name`; with create=True make it (and its manifest) when missing.

    With an `embedder` (or an explicit `embedder_id`/`dim`, e.g. when migrating a KB's vectors), they
    must match the manifest (EmbedderMismatch otherwise). Creating without either builds the
    configured embedder just to learn its id and dim.
    The chunker and analyzer recorded in the manifest must be the running ones (check_indexing;
    create=True is the ingest path, which also refuses a KB chunked before versions were recorded).
    Raises KnowledgeBaseNotFound when the KB does not exist and create is False.
    """
    validate_kb_name(name)
    backend = get_backend(settings)
    if embedder is not None:
        embedder_id, dim = embedder.id, int(embedder.dim)
    elif embedder_id is None and create and not backend.exists(settings, name):
        from rag.embedders import make_embedder

        made = make_embedder(settings.embedder)
        embedder_id, dim = made.id, int(made.dim)
    store = backend.open(settings, name, embedder_id=embedder_id, dim=dim, create=create)
    check_indexing(store.manifest, settings, name, writing=create)
    return store


def check_indexing(manifest: Manifest, settings: Settings, kb: str, *, writing: bool) -> None:
    """Refuse a KB whose chunks or keyword index the running code would not have made.

    - Another analyzer version: its keyword index no longer matches the tokens of queries (silent
      misses), so it is refused for reading too.
    - Other chunking settings or another chunker version recorded: new documents would be cut
      differently from the ones stored, so ids and boundaries of one KB would follow two rules.
    - No chunker version recorded (a KB made before versions were, by chunker version 1): it opens for
      reading, because every stored chunk is still exact text of its page with its own offsets, and
      retrieval, citations and quotes work on that text whatever the boundaries; ingesting into it
      (writing=True) is refused, since that would mix the two chunkers.
    Each refusal says how to re-index.
    """
    recorded = dict(manifest.chunker)
    version = recorded.pop("version", None)
    current = chunker_manifest(settings.chunking)
    current.pop("version")
    # Headers change what was embedded and indexed, not the stored chunks: a KB with other headers (or
    # none, recorded as missing) is read as it is, and only writing into it is refused.
    recorded_headers, headers = str(recorded.pop("headers", "") or ""), str(current.pop("headers"))
    reindex = (
        f"re-index it: `citeqa kb remove {kb} --yes` then `citeqa ingest PATH --kb {kb}` "
        "(or ingest into a new knowledge base with `--kb NEW_NAME`)"
    )
    if manifest.analyzer != ANALYZER_VERSION:
        raise IndexMismatch(
            f"knowledge base {kb!r} was indexed by keyword analyzer version {manifest.analyzer}; this citeqa "
            f"uses version {ANALYZER_VERSION}, so its keyword search would not match; {reindex}."
        )
    changed = _changed_settings(recorded, current)
    if recorded and changed:
        settings_hint = " ".join(f"--set chunking.{k}={recorded[k]}" for k in changed if k in recorded)
        raise IndexMismatch(
            f"knowledge base {kb!r} was chunked with "
            + ", ".join(f"{k}={recorded.get(k)!r}" for k in changed)
            + "; the configured chunking is "
            + ", ".join(f"{k}={current.get(k)!r}" for k in changed)
            + f". Run with the KB's settings ({settings_hint}) or {reindex}."
        )
    if version is not None and version != CHUNKER_VERSION:
        raise IndexMismatch(
            f"knowledge base {kb!r} was chunked by chunker version {version}; this citeqa chunks with "
            f"version {CHUNKER_VERSION}; {reindex}."
        )
    if version is None:
        if writing:
            raise IndexMismatch(
                f"knowledge base {kb!r} was chunked by an older citeqa (chunker version 1, before versions "
                f"were recorded); new documents would be chunked by version {CHUNKER_VERSION}. It can still be "
                f"searched and asked; to add documents, {reindex}."
            )
        log.info("knowledge base %r predates chunker versions (version 1); open for reading", kb)
    if writing and recorded_headers != headers:
        was = f"with chunk headers {recorded_headers!r}" if recorded_headers else "without chunk headers"
        now = f"headers {headers!r}" if headers else "no headers"
        raise IndexMismatch(
            f"knowledge base {kb!r} was indexed {was}; the configured chunking uses {now}, and one KB must not "
            f"mix the two. Run with --set chunking.headers={'true' if recorded_headers else 'false'} or {reindex}."
        )


def _changed_settings(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of chunking settings whose recorded value differs from the configured one (missing = differs)."""
    return sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))


def list_kbs(settings: Settings) -> list[str]:
    """Names of the knowledge bases on the configured backend, sorted."""
    return sorted(get_backend(settings).list_names(settings))


def kb_exists(settings: Settings, name: str) -> bool:
    try:
        validate_kb_name(name)
    except InvalidRequest:
        return False
    return get_backend(settings).exists(settings, name)


def remove_kb(settings: Settings, name: str) -> None:
    """Delete a knowledge base and everything in it; KnowledgeBaseNotFound if it does not exist."""
    validate_kb_name(name)
    backend = get_backend(settings)
    if not backend.exists(settings, name):
        raise KnowledgeBaseNotFound(
            f"knowledge base {name!r} does not exist (known: {', '.join(list_kbs(settings)) or 'none'})"
        )
    backend.drop(settings, name)
