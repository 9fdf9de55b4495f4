"""Knowledge-base store backends by name: `faiss` (embedded default), `pgvector`, `milvus`.

Every backend module exposes a *backend* object (built by the factory registered here) with:

    open(settings: Settings, name: str, *, embedder_id: str | None, dim: int | None, create: bool) -> Store
        Open knowledge base `name`. `embedder_id`/`dim` are checked against the KB's manifest
        (rag.store.manifest.check_embedder -> EmbedderMismatch); None skips the check (read-only
        tools such as `kb stats`). With `create=True` a missing KB is created (then `embedder_id`
        and `dim` are required and written into the manifest); otherwise a missing KB raises
        KnowledgeBaseNotFound.
    list_names(settings: Settings) -> list[str]      names of existing knowledge bases, sorted
    exists(settings: Settings, name: str) -> bool
    drop(settings: Settings, name: str) -> None      delete a KB and everything in it (no error if absent)

What the backends share (write validation, the row -> Chunk mapper, errors, the stats shape) is in
rag/store/common.py. Factories are called as `factory(argument: str) -> StoreBackend` (the registry's spec convention);
heavy libraries (faiss, psycopg, pymilvus) are imported inside the backend modules, so a missing
optional engine only fails when that backend is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rag.registry import Registry
from rag.store.common import chunk_text_hash

__all__ = ["STORES", "StoreBackend", "chunk_text_hash", "get_backend"]

if TYPE_CHECKING:
    from rag.protocols import Store
    from rag.settings import Settings


@runtime_checkable
class StoreBackend(Protocol):
    """Creates, lists and drops knowledge bases of one storage engine."""

    name: str

    def open(
        self,
        settings: Settings,
        name: str,
        *,
        embedder_id: str | None,
        dim: int | None,
        create: bool,
    ) -> Store: ...

    def list_names(self, settings: Settings) -> list[str]: ...

    def exists(self, settings: Settings, name: str) -> bool: ...

    def drop(self, settings: Settings, name: str) -> None: ...


STORES: Registry[StoreBackend] = Registry("store backend")


def _lazy(module: str, attr: str, package_hint: str):  # type: ignore[no-untyped-def]
    def factory(argument: str, **_: object) -> StoreBackend:
        import importlib

        from rag.errors import ConfigError

        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"store backend {module.rsplit('.', 1)[-1]!r} is not available ({exc}); {package_hint}"
            ) from exc
        return getattr(mod, attr)()

    return factory


# faiss is imported deep inside the dense index (at its first build): `requires` checks it up front.
STORES.register(
    "faiss",
    _lazy("rag.store.sqlite_faiss", "SqliteFaissBackend", "pip install faiss-cpu"),
    requires=("faiss",),
    hint="pip install faiss-cpu",
)
STORES.register(
    "pgvector",
    _lazy("rag.store.pgvector", "PgvectorBackend", "pip install 'psycopg[binary,pool]'"),
)
STORES.register("milvus", _lazy("rag.store.milvus", "MilvusBackend", "pip install pymilvus"))


def get_backend(settings: Settings) -> StoreBackend:
    """The backend chosen by settings.store.backend (CITEQA_STORE)."""
    return STORES.create(settings.store.backend)
