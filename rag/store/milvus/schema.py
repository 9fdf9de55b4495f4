"""Milvus collections: the KB registry and the four collections of each knowledge base."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import KnowledgeBaseError

if TYPE_CHECKING:
    from pymilvus import MilvusClient

REGISTRY = "citeqa_kbs"
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
INDEX_PARAMS = {"kind": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
MAX_VARCHAR = 65_535
CONSISTENCY = "Strong"  # read-your-writes across replicas (a cluster may use "Bounded" for speed)
SUFFIXES = ("chunks", "docs", "pages", "paths")
DOC_FIELDS = (
    "id",
    "source",
    "title",
    "sha256",
    "pages",
    "chunks",
    "added_at",
    "updated_at",
    "metadata",
    "state",
    "replaces",
)


def dummy() -> list[float]:
    """The value of `_v`: Milvus requires a vector field in every collection, even those without vectors."""
    return [0.0, 0.0]


def _flat_index(c: MilvusClient) -> Any:
    ip = c.prepare_index_params()
    ip.add_index("_v", index_type="FLAT", metric_type="L2")
    return ip


def ensure_registry(c: MilvusClient) -> None:
    """The `citeqa_kbs` collection (name -> prefix + manifest JSON), created and loaded."""
    from pymilvus import DataType

    if not c.has_collection(REGISTRY):
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=1024)
        schema.add_field("prefix", DataType.VARCHAR, max_length=64)
        schema.add_field("manifest", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
        c.create_collection(REGISTRY, schema=schema, index_params=_flat_index(c), consistency_level=CONSISTENCY)
    load(c, REGISTRY)


def create_kb_collections(c: MilvusClient, prefix: str, dim: int, *, lite: bool) -> None:
    """Create whichever of the KB's collections are missing (all of them for a new KB)."""
    from pymilvus import DataType, Function, FunctionType

    def small(schema_fields: list[tuple[str, Any, dict[str, Any]]], pk: str) -> Any:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        for fname, ftype, kw in schema_fields:
            schema.add_field(fname, ftype, is_primary=(fname == pk), **kw)
        schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
        return schema

    vc = DataType.VARCHAR
    docs = small(
        [
            ("id", vc, {"max_length": 512}),
            ("source", vc, {"max_length": 4096 * 4}),
            ("title", vc, {"max_length": 4096 * 4}),
            ("sha256", vc, {"max_length": 64}),
            ("pages", DataType.INT64, {}),
            ("chunks", DataType.INT64, {}),
            ("added_at", DataType.DOUBLE, {}),
            ("updated_at", DataType.DOUBLE, {}),
            ("metadata", vc, {"max_length": MAX_VARCHAR}),
            ("state", vc, {"max_length": 16}),
            ("replaces", vc, {"max_length": 512}),
        ],
        "id",
    )
    pages = small(
        [
            ("id", vc, {"max_length": 600}),
            ("doc_id", vc, {"max_length": 512}),
            ("number", DataType.INT64, {}),
            ("part", DataType.INT64, {}),
            ("text", vc, {"max_length": MAX_VARCHAR}),
        ],
        "id",
    )
    paths = small([("path", vc, {"max_length": 4096 * 4}), ("doc_id", vc, {"max_length": 512})], "path")
    for suffix, schema in (("docs", docs), ("pages", pages), ("paths", paths)):
        if not c.has_collection(f"{prefix}_{suffix}"):
            c.create_collection(
                f"{prefix}_{suffix}", schema=schema, index_params=_flat_index(c), consistency_level=CONSISTENCY
            )

    if c.has_collection(f"{prefix}_chunks"):
        return
    # The analyzer's tokens arrive space-joined: Milvus ≥2.5 splits them with its whitespace tokenizer;
    # Milvus Lite has only 'standard' and 'jieba', and 'standard' (\w+, lower-case) keeps our tokens
    # except that it splits the few containing punctuation (3.5 -> 3, 5) — the same at query time.
    analyzer = {"tokenizer": "standard"} if lite else {"tokenizer": "whitespace"}
    schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", vc, is_primary=True, max_length=512)
    schema.add_field("doc_id", vc, max_length=512)
    schema.add_field("ordinal", DataType.INT64)
    schema.add_field("text", vc, max_length=MAX_VARCHAR)
    schema.add_field("page_start", DataType.INT64)
    schema.add_field("page_end", DataType.INT64)
    schema.add_field("char_start", DataType.INT64)
    schema.add_field("char_end", DataType.INT64)
    schema.add_field("section", vc, max_length=2048 * 4)
    schema.add_field("token_count", DataType.INT64)
    schema.add_field("text_sha", vc, max_length=64)
    schema.add_field("source", vc, max_length=4096 * 4)
    schema.add_field("tokens", vc, max_length=MAX_VARCHAR, enable_analyzer=True, analyzer_params=analyzer)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["tokens"], output_field_names=["sparse"]
        )
    )
    ip = c.prepare_index_params()
    ip.add_index(
        "embedding", index_type="HNSW", metric_type="IP", params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    )
    ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    ip.add_index("doc_id", index_type="INVERTED")
    ip.add_index("text_sha", index_type="INVERTED")
    try:
        c.create_collection(f"{prefix}_chunks", schema=schema, index_params=ip, consistency_level=CONSISTENCY)
    except Exception as exc:
        raise KnowledgeBaseError(f"cannot create Milvus collection {prefix}_chunks: {exc}") from exc


def load(c: MilvusClient, collection: str) -> None:
    """Collections must be loaded to be searched; after a restart (or in a new process) they are not."""
    state = c.get_load_state(collection).get("state")
    if "Loaded" not in str(state):
        c.load_collection(collection)
