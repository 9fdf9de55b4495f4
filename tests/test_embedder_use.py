"""The fast `use` embedder (multilingual USE v3, bundled weights): real vectors, zh and en, and a KB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import ingest_paths
from rag.embedders import make_embedder
from rag.embedders.use import DIM, UseEmbedder, default_threads
from rag.kb import open_kb
from rag.settings import EmbedderSettings, load_settings

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    "星河新能源2024年实现营业收入58.3亿元，同比增长24.6%。",
    "公司在德国慕尼黑设立了欧洲服务中心。",
    "Lumen Robotics shipped 4,820 robots in fiscal year 2024, up from 3,150.",
    "It rained all week in Paris and the museums were crowded.",
]


@pytest.fixture(scope="module")
def use() -> UseEmbedder:
    e = make_embedder(EmbedderSettings(name="use"))
    assert isinstance(e, UseEmbedder)
    return e


def test_real_vectors_zh_and_en(use: UseEmbedder) -> None:
    assert use.id == "use-multilingual-v3" and use.dim == DIM == 512
    assert use.threads == default_threads() and 1 <= use.threads <= 4
    docs = use.embed_documents(DOCS)
    assert docs.shape == (4, 512) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    zh = docs @ use.embed_query("星河新能源的营业收入是多少？")
    assert zh[0] > max(zh[1], zh[3]), zh
    en = docs @ use.embed_query("How many robots did Lumen Robotics ship?")
    assert en[2] > max(en[1], en[3]), en
    assert use.embed_query("你好").shape == (512,)
    assert use.embed_documents([]).shape == (0, 512)
    assert use.count_tokens("星河新能源") > 2 and use.count_tokens("hello world") >= 3


def test_threads_is_a_setting() -> None:
    e = make_embedder(EmbedderSettings(name="use", threads=1))
    assert isinstance(e, UseEmbedder) and e.threads == 1


def test_kb_ingests_with_use(home: Path, use: UseEmbedder) -> None:
    settings = load_settings(overrides={"paths.home": home, "llm.name": "smollm2-135m", "embedder.name": "use"})
    store = open_kb(settings, "fast", use, create=True)
    try:
        summary = ingest_paths([REPO / "samples"], store, use, settings, workers=1)
        assert not summary.failed and len(summary.added) == 2 and summary.chunks > 0
        stats = store.stats()
        assert stats["embedder"] == "use-multilingual-v3" and stats["dim"] == 512
        hits = store.dense_search(use.embed_query("公司计划在合肥新建储能电池工厂"), 3)
        assert any("合肥" in h.chunk.text for h in hits), [h.chunk.text[:40] for h in hits]
    finally:
        store.close()
