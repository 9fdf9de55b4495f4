"""Follow-up questions made standalone before retrieval ("那它的营收呢？" -> "爱康科技的营收呢？").

The LLM rewrites when there is history and the question looks dependent (pronouns, very short
questions, "what about ..."); its output is accepted only when it looks like a question that names
something from the conversation. Otherwise a cheap heuristic puts the previous question's key
entities into the follow-up. With no history nothing is called and the question is returned as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.lang import detect_language
from rag.protocols import Generator, Message

HISTORY_TOKENS = 512  # history shown to the rewriter, newest first until this budget is spent
MESSAGE_CHARS = 400  # each history message is cut to this many characters
REWRITE_MAX_TOKENS = 64

_ZH_PRONOUN = re.compile(
    r"它们|他们|她们|它|他|她|其|该公司|该|此|这家|那家|这个|那个|这些|那些|上述|前者|后者|同期|对应"
)
_ZH_FOLLOWUP = re.compile(r"^(那|那么|还有|另外|以及|而|和|与)|呢[？?]?$")
_EN_PRONOUN = re.compile(
    r"\b(it|its|they|their|them|this|that|these|those|he|she|his|her|the company|the same)\b", re.IGNORECASE
)
_EN_FOLLOWUP = re.compile(r"^\s*(what|how)\s+about\b|^\s*(and|also|then)\b", re.IGNORECASE)
_EN_QWORDS = frozenset(
    "what which who whom whose when where why how is are was were do does did the a an of in on for to and or about much many its it their they this that".split()
)
_ZH_QWORDS = frozenset(
    "什么 多少 哪些 哪个 哪里 哪 谁 如何 怎么 怎样 是否 是 的 了 吗 呢 有 在 为 和 与 及 请问 一下 那 那么 它 其 该 这 这个 那个 还有 大约 大概 约 对 于 把 被 给 从 到 请".split()
)

REWRITE_PROMPT = {
    "en": (
        "Rewrite the user's last question as one standalone question that can be understood without the "
        "conversation: replace pronouns like 'it' or 'they' with the names they refer to. "
        "Output only the rewritten question."
    ),
    "zh": "把用户的最后一个问题改写成一个不依赖上下文也能理解的独立问题：把“它”“其”“该公司”等代词换成所指的名称。只输出改写后的问题。",
}


def looks_dependent(question: str) -> bool:
    """True when the question probably leans on earlier turns (pronouns, 短问句, 'what about ...')."""
    q = question.strip()
    if detect_language(q) == "zh":
        han = len(re.findall(r"[\u4e00-\u9fff]", q))
        return bool(_ZH_PRONOUN.search(q) or _ZH_FOLLOWUP.search(q) or han <= 6)
    words = re.findall(r"[A-Za-z0-9]+", q)
    return bool(_EN_PRONOUN.search(q) or _EN_FOLLOWUP.search(q) or len(words) <= 3)


def trim_history(
    history: Sequence[Message], count_tokens: Callable[[str], int], budget: int = HISTORY_TOKENS
) -> list[Message]:
    """The newest user/assistant messages that fit `budget` tokens, oldest first, each cut to MESSAGE_CHARS."""
    kept: list[Message] = []
    spent = 0
    for message in reversed(history):
        if message.get("role") not in {"user", "assistant"} or not message.get("content", "").strip():
            continue
        content = message["content"].strip()
        if len(content) > MESSAGE_CHARS:
            content = content[:MESSAGE_CHARS] + " …"
        cost = count_tokens(content) + 4
        if spent + cost > budget and kept:
            break
        kept.append({"role": message["role"], "content": content})
        spent += cost
    return list(reversed(kept))


def key_entities(text: str) -> list[str]:
    """Names and numbers worth carrying into a follow-up: nouns for Chinese, capitalised words for English."""
    if detect_language(text) == "zh":
        import jieba  # already a dependency of the keyword analyzer

        # runs of content words between function words: 江苏爱康太阳能公司 | 法定代表人
        out: list[str] = []
        run = ""
        for word in [*jieba.lcut(text), "？"]:
            if word in _ZH_QWORDS or not re.fullmatch(r"[\w\u4e00-\u9fff]+", word):
                if len(run) >= 2 and run not in out:
                    out.append(run)
                run = ""
            else:
                run += word
        return out
    names = re.findall(r"\b(?:[A-Z][\w&.'-]*|\d[\d,.]*%?)(?:\s+(?:[A-Z][\w&.'-]*|\d[\d,.]*%?))*", text)
    out = []
    for i, name in enumerate(names):
        if name.lower() in _EN_QWORDS or (i == 0 and text.strip().startswith(name) and name.lower() in _EN_QWORDS):
            continue
        name = re.sub(r"['’]s\b", "", name)
        first = name.split()[0].lower()
        if first in _EN_QWORDS:
            name = " ".join(name.split()[1:])
        if name and name not in out:
            out.append(name)
    return out


def heuristic_rewrite(question: str, history: Sequence[Message]) -> str:
    """Put the previous user question's key entities into the follow-up (no LLM)."""
    previous = [m["content"] for m in history if m.get("role") == "user" and m.get("content", "").strip()]
    if not previous:
        return question
    entities = key_entities(previous[-1])
    if not entities:
        return f"{previous[-1].strip()} {question.strip()}"
    q = question.strip()
    if detect_language(q) == "zh":
        subject = entities[0]
        missing = [e for e in entities[1:] if e not in q]
        replaced = _ZH_PRONOUN.sub(subject, q, count=1)
        if replaced == q:
            return f"{''.join(entities)}：{q}" if not missing else f"{subject}{''.join(missing)}：{q}"
        return replaced
    missing = [e for e in entities if e.lower() not in q.lower()]
    return f"{', '.join(missing)}: {q}" if missing else q


def _acceptable(candidate: str, question: str, history: Sequence[Message]) -> bool:
    """An LLM rewrite is used only if it is one short line in the question's language that names
    something from the conversation the question itself did not."""
    if not candidate or "\n" in candidate or len(candidate) > 3 * len(question) + 80:
        return False
    if detect_language(candidate) != detect_language(question):
        return False
    context = " ".join(m.get("content", "") for m in history)
    added = [e for e in key_entities(candidate) if e not in question]
    return any(e in context for e in added)


def rewrite_question(
    question: str,
    history: Sequence[Message] | None,
    generator: Generator | None = None,
    *,
    use_llm: bool = True,
) -> str:
    """A standalone version of `question` given `history` (returned unchanged when there is none)."""
    if not history or not looks_dependent(question):
        return question
    count = generator.count_tokens if generator is not None else (lambda t: len(t) // 2 + 1)
    trimmed = trim_history(history, count)
    if not trimmed:
        return question
    if generator is not None and use_llm:
        lang = detect_language(question)
        convo = "\n".join(f"{m['role']}: {m['content']}" for m in trimmed)
        label = (
            ("对话：\n", "\n最后的问题：", "\n独立问题：")
            if lang == "zh"
            else ("Conversation:\n", "\nLast question: ", "\nStandalone question:")
        )
        messages: list[Message] = [
            {"role": "system", "content": REWRITE_PROMPT[lang]},
            {"role": "user", "content": f"{label[0]}{convo}{label[1]}{question.strip()}{label[2]}"},
        ]
        out = generator.generate(messages, stream=False, max_tokens=REWRITE_MAX_TOKENS, temperature=0.0, stop=["\n"])
        candidate = str(out).strip().strip('"“”').strip()
        candidate = re.sub(
            r"^(standalone question|rewritten question|独立问题|改写后的问题)\s*[:：]\s*",
            "",
            candidate,
            flags=re.IGNORECASE,
        )
        if _acceptable(candidate, question, trimmed):
            return candidate
    return heuristic_rewrite(question, trimmed)
