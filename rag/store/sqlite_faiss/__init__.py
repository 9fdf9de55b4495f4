"""The embedded default store (`faiss`): SQLite (source of truth) + a derived FAISS index + FTS5 keyword index.

Layout of CITEQA_HOME/NAME/ (folder 0700, files 0600: see rag/store/private.py): `manifest.json`,
`kb.sqlite` (+ WAL files), `dense.<gen>.<kind>.faiss`. store.py holds the KB, dense_cache.py the FAISS
cache of SQLite's vectors, queue.py the embedding queue (deferred embedding), sql.py the queries and
transactions.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from rag.settings import Settings
from rag.store.common import kb_not_found
from rag.store.manifest import MANIFEST_NAME, Manifest, check_embedder, read_manifest, write_manifest
from rag.store.private import make_private_dir, touch_private
from rag.store.schema import connect
from rag.store.sqlite_faiss.sql import DB_NAME
from rag.store.sqlite_faiss.store import SqliteFaissStore

__all__ = ["DB_NAME", "SqliteFaissBackend", "SqliteFaissStore"]


class SqliteFaissBackend:
    """Knowledge bases as folders under settings.paths.home (see rag/store/__init__.py)."""

    name = "faiss"

    @staticmethod
    def folder(settings: Settings, name: str) -> Path:
        return Path(settings.paths.home) / name

    def exists(self, settings: Settings, name: str) -> bool:
        return (self.folder(settings, name) / MANIFEST_NAME).is_file()

    def list_names(self, settings: Settings) -> list[str]:
        home = Path(settings.paths.home)
        if not home.is_dir():
            return []
        return sorted(
            p.name
            for p in home.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_")) and (p / MANIFEST_NAME).is_file()
        )

    def drop(self, settings: Settings, name: str) -> None:
        folder = self.folder(settings, name)
        if not folder.exists():
            return
        trash = folder.with_name(f".trash-{name}-{uuid.uuid4().hex[:8]}")
        folder.rename(trash)  # atomic: the KB disappears at once, deletion can be slow
        shutil.rmtree(trash, ignore_errors=True)

    def open(
        self, settings: Settings, name: str, *, embedder_id: str | None, dim: int | None, create: bool
    ) -> SqliteFaissStore:
        folder = self.folder(settings, name)
        threshold = settings.retrieval.hnsw_threshold
        if (folder / MANIFEST_NAME).is_file():
            manifest = read_manifest(folder)
            check_embedder(manifest, embedder_id, dim, name)
        elif not create:
            raise kb_not_found(name, str(settings.paths.home), self.list_names(settings))
        else:
            manifest = Manifest.for_new_kb(
                name,
                "faiss",
                embedder_id,
                dim,
                settings.chunking.model_dump(),
                {"kind": "flat", "hnsw_threshold": threshold},
            )
            make_private_dir(folder)  # 0700: the KB holds the full text of its documents
            touch_private(folder / DB_NAME)  # 0600 before SQLite creates it (its WAL files copy the mode)
            connect(str(folder / DB_NAME)).close()
            write_manifest(folder, manifest)  # written last: its presence means the KB exists
        return SqliteFaissStore(folder, name, manifest, threshold)
