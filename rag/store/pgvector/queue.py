"""The embedding queue of a pgvector KB (deferred embedding; a mixin of PgvectorStore).

A queued chunk is a row with `embedding` NULL and its embedding input in `embed_text` (KB migration 2);
the partial index `chunks_pending` finds them. The queue is the table itself: it survives kill -9 and
restarts, and replicas share it (a second writer of the same keys stores nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np

from rag.store.common import validate_embeddings
from rag.store.pgvector.search import vec_text

if TYPE_CHECKING:
    from psycopg import Connection


class PgEmbeddingQueue:
    """pending_embeddings / add_embeddings / embedding_counts of PgvectorStore (it provides `_tx` and `_sql`)."""

    name: str
    dim: int

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _sql(self, statement: str) -> str: ...

    def pending_embeddings(self, limit: int) -> list[tuple[str, str]]:
        """Queued (text_sha, embed_text) pairs, oldest document first, in chunk order within one."""
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT text_sha, embed_text FROM (SELECT DISTINCT ON (c.text_sha) c.text_sha, c.embed_text, "
                    "d.added_at, c.doc_id, c.ordinal FROM {s}.chunks c JOIN {s}.documents d ON d.id = c.doc_id "
                    "WHERE c.embedding IS NULL ORDER BY c.text_sha, d.added_at, c.doc_id, c.ordinal) q "
                    "ORDER BY added_at, doc_id, ordinal LIMIT %s"
                ),
                (max(0, int(limit)),),
            ).fetchall()
        return [(str(k), str(t)) for k, t in rows]

    def add_embeddings(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Set the vector of every still-queued chunk of these texts in one transaction; returns the texts stored.

        `embedding IS NULL` in the UPDATE makes a second writer of the same keys (another replica) a no-op:
        under READ COMMITTED it waits for the first one's row locks, then re-checks the condition."""
        by_key = validate_embeddings(keys, vectors, self.dim, self.name)
        if not by_key:
            return 0
        with self._tx() as conn:
            rows = conn.execute(
                self._sql(
                    "UPDATE {s}.chunks c SET embedding = v.vec::vector, embed_text = NULL "
                    "FROM unnest(%s::text[], %s::text[]) AS v(sha, vec) "
                    "WHERE c.text_sha = v.sha AND c.embedding IS NULL RETURNING c.text_sha"
                ),
                (list(by_key), [vec_text(v) for v in by_key.values()]),
            ).fetchall()
        return len({r[0] for r in rows})

    def embedding_counts(self) -> tuple[int, int]:
        """(chunks with a vector, all chunks): the total from documents.chunks, the queue from its partial index."""
        with self._tx() as conn:
            total, queued = conn.execute(
                self._sql(
                    "SELECT (SELECT coalesce(sum(chunks), 0) FROM {s}.documents), "
                    "(SELECT count(*) FROM {s}.chunks WHERE embedding IS NULL)"
                )
            ).fetchone()
        return int(total) - int(queued), int(total)
