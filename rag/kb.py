"""Knowledge bases by name: open, create, list and remove them on the configured store backend.

The backend is chosen by settings.store.backend (`CITEQA_STORE`), see rag/store/__init__.py.
"""

from __future__ import annotations

import re

from rag.errors import InvalidRequest, KnowledgeBaseNotFound
from rag.protocols import Embedder, Store
from rag.settings import Settings
from rag.store import get_backend

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
    return backend.open(settings, name, embedder_id=embedder_id, dim=dim, create=create)


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
