"""Milvus knowledge bases via pymilvus: the same client code talks to Milvus Lite (a local `.db`
path, the default under CITEQA_HOME) and to a Milvus cluster (`http://host:19530`).

Everything lives in Milvus, so several service replicas can share one cluster (no local side file):
a registry collection `citeqa_kbs` (name -> manifest JSON) and, per knowledge base, four
collections named `kb_<hash of name>_*`:

  chunks  dense vector (HNSW, inner product) + a BM25 sparse vector computed by Milvus from `tokens`
          (the analyzer's tokens space-joined, split again by a whitespace tokenizer) + chunk fields
  docs    one row per document with `state` ('writing' | 'ready') and `replaces`
  pages   page text (split in parts under Milvus's VARCHAR limit)
  paths   path -> doc id (dedup by sha256: one document, many paths)

Deferred embedding is not offered (`MilvusStore.defers_embedding` is False): a Milvus row needs its vector,
so `add_document(vectors=None)` raises InvalidRequest, `pending_embeddings()` is always empty,
`add_embeddings()` stores 0 for an empty call (InvalidRequest otherwise) and `embedding_counts()` is
(chunks, chunks). Callers embed before add_document on this backend.

schema.py: the collections; client.py: clients and expressions; publish.py: the crash-safe write
protocol; store.py: reads and search. This module: the backend that creates, lists and drops KBs.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from rag.store.common import kb_not_found
from rag.store.manifest import Manifest, check_embedder
from rag.store.milvus.client import client, default_uri, is_lite, lit, release
from rag.store.milvus.schema import (
    INDEX_PARAMS,
    REGISTRY,
    SUFFIXES,
    create_kb_collections,
    dummy,
    ensure_registry,
    load,
)
from rag.store.milvus.store import BACKEND, MilvusStore

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from rag.settings import Settings

__all__ = ["MilvusBackend", "MilvusStore", "prefix_for", "release"]


def prefix_for(name: str) -> str:
    """Collection-name prefix: Milvus names allow only [A-Za-z0-9_], so a hash stands for any KB name."""
    return "kb_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


class MilvusBackend:
    """Creates, lists and drops knowledge bases in one Milvus instance (settings.store.url)."""

    name = BACKEND

    def _uri(self, settings: Settings) -> str:
        return settings.store.url or default_uri(settings)

    def _registry(self, settings: Settings) -> MilvusClient:
        c = client(self._uri(settings))
        ensure_registry(c)
        return c

    def open(
        self, settings: Settings, name: str, *, embedder_id: str | None, dim: int | None, create: bool
    ) -> MilvusStore:
        uri = self._uri(settings)
        c = self._registry(settings)
        rows = c.query(REGISTRY, filter=f"name == {lit(name)}", output_fields=["prefix", "manifest"])
        if not rows:
            if not create:
                raise kb_not_found(name, f"Milvus at {uri}", self.list_names(settings))
            manifest = Manifest.for_new_kb(
                name, BACKEND, embedder_id, dim, settings.chunking.model_dump(), dict(INDEX_PARAMS)
            )
            prefix = prefix_for(name)
            create_kb_collections(c, prefix, int(manifest.dim), lite=is_lite(uri))
            c.upsert(
                REGISTRY, [{"name": name, "prefix": prefix, "manifest": json.dumps(manifest.to_json()), "_v": dummy()}]
            )
            c.flush(REGISTRY)
        else:
            prefix = rows[0]["prefix"]
            manifest = Manifest.from_json(json.loads(rows[0]["manifest"]), where=f"{REGISTRY}[{name!r}]")
            check_embedder(manifest, embedder_id, dim, name)
            create_kb_collections(c, prefix, manifest.dim, lite=is_lite(uri))  # no-op unless creation was interrupted
        for suffix in SUFFIXES:
            load(c, f"{prefix}_{suffix}")
        return MilvusStore(c, uri, name, prefix, manifest)

    def list_names(self, settings: Settings) -> list[str]:
        c = self._registry(settings)
        return sorted(r["name"] for r in c.query(REGISTRY, filter='name != ""', output_fields=["name"]))

    def exists(self, settings: Settings, name: str) -> bool:
        c = self._registry(settings)
        return bool(c.query(REGISTRY, filter=f"name == {lit(name)}", output_fields=["name"]))

    def drop(self, settings: Settings, name: str) -> None:
        c = self._registry(settings)
        rows = c.query(REGISTRY, filter=f"name == {lit(name)}", output_fields=["prefix"])
        if not rows:
            return
        c.delete(REGISTRY, ids=[name])
        c.flush(REGISTRY)
        for suffix in SUFFIXES:
            if c.has_collection(f"{rows[0]['prefix']}_{suffix}"):
                c.drop_collection(f"{rows[0]['prefix']}_{suffix}")
