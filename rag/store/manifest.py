"""A knowledge base knows what made it: `manifest.json` beside the data.

JSON fields: schema_version, backend, embedder (id), dim, chunker (settings dict + the chunker's
"version"), analyzer (keyword analyzer version), index (kind: "flat" | "hnsw", plus the HNSW threshold
in force), created_at; rag.kb.check_indexing compares chunker and analyzer with the running code.
Backends without a local folder (pgvector, milvus) keep the same JSON in a table via
`Manifest.to_json()` / `Manifest.from_json()`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.chunking import chunker_manifest
from rag.errors import ConfigError, EmbedderMismatch, KnowledgeBaseError
from rag.store.private import write_private_text

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Version of rag/store/analyzer.py's tokens (tokenize): bump it whenever the same text would give other
# keyword tokens, since the keyword index of an existing KB then no longer matches its queries. A
# manifest without the field was written by version 1 (tokenize has not changed since manifests exist).
ANALYZER_VERSION = 1


@dataclass(slots=True)
class Manifest:
    backend: str
    embedder: str
    dim: int
    chunker: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=lambda: {"kind": "flat"})
    analyzer: int = ANALYZER_VERSION
    schema_version: int = SCHEMA_VERSION
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_new_kb(
        cls,
        name: str,
        backend: str,
        embedder_id: str | None,
        dim: int | None,
        chunker: dict[str, Any],
        index: dict[str, Any],
    ) -> Manifest:
        """The manifest of a knowledge base about to be created (every backend records the same).

        `chunker` is the chunking settings dict; the running chunker's version is added unless it carries
        one already (a KB imported from an export keeps the chunker its chunks were made with)."""
        if embedder_id is None or dim is None:
            raise ConfigError(f"creating knowledge base {name!r} needs the embedder's id and dimension")
        chunker = chunker if "version" in chunker else chunker_manifest(chunker)
        return cls(backend=backend, embedder=embedder_id, dim=int(dim), chunker=chunker, index=index)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        try:
            return cls(
                backend=str(data["backend"]),
                embedder=str(data["embedder"]),
                dim=int(data["dim"]),
                chunker=dict(data.get("chunker") or {}),
                index=dict(data.get("index") or {"kind": "flat"}),
                analyzer=int(data.get("analyzer", 1)),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
                created_at=float(data.get("created_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KnowledgeBaseError(f"{where}: malformed manifest ({exc})") from exc


def check_embedder(manifest: Manifest, embedder_id: str | None, dim: int | None, kb: str) -> None:
    """Refuse to mix embedders: raise EmbedderMismatch naming both models."""
    if embedder_id is not None and embedder_id != manifest.embedder:
        raise EmbedderMismatch(
            f"knowledge base {kb!r} was built with embedder {manifest.embedder!r} ({manifest.dim}-d); "
            f"the configured embedder is {embedder_id!r}"
            + (f" ({dim}-d)" if dim is not None else "")
            + f". Use CITEQA_EMBEDDER={manifest.embedder} or re-ingest into a new knowledge base."
        )
    if dim is not None and dim != manifest.dim:
        raise EmbedderMismatch(
            f"knowledge base {kb!r} holds {manifest.dim}-d vectors from {manifest.embedder!r}; "
            f"the configured embedder {embedder_id or '?'!r} gives {dim}-d vectors"
        )
    if manifest.schema_version > SCHEMA_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {kb!r} has schema version {manifest.schema_version}; this citeqa reads "
            f"up to {SCHEMA_VERSION} — upgrade citeqa"
        )


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"{path}: cannot read manifest ({exc})") from exc
    return Manifest.from_json(data, where=str(path))


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write atomically (temp file + os.replace) so a crash never leaves half a manifest."""
    path = folder / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    write_private_text(tmp, json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")  # 0600, fsynced
    os.replace(tmp, path)
