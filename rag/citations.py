"""Citation verification: every citation a user sees is checked against the page it names.

For each sentence of the model's answer and each `[n]` marker in it, the claim (the sentence, or the
part of it before the marker) is matched against the cited chunk with language-aware overlap:
character bigrams for Chinese, words for English, and every number in the claim must appear in the
source. A marker to the wrong source is re-pointed to a source that supports the claim; a claim no
source supports is listed as unsupported and loses its marker; a marker to a source that was never
given is removed. Each surviving citation quotes the best-matching sentence of the chunk exactly as
it stands in the page text (`page_text[char_start:char_end] == quote`). Citations are renumbered
1..m in order of first use and the markers in the answer are rewritten to match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag.errors import CiteqaError
from rag.records import Citation, Hit
from rag.store.analyzer import stem

PageText = Callable[[str, int], str]  # (doc_id, 1-based page) -> page text

SUPPORT_THRESHOLD = 0.5  # share of the claim's content grams found in the source
AUTO_CITE_THRESHOLD = 0.7  # an uncited sentence gets a citation only when clearly supported
MIN_CLAIM_GRAMS = 3  # shorter uncited sentences ("Sure.", "Yes.") are neither cited nor flagged
# A claim must be backed by one passage of the source — a sentence and this many either side — not by
# words scattered over a whole chunk: "the school has 18 students" must not verify because "18"
# appears three paragraphs away from "school".
WINDOW_SENTENCES = 2
# A short answer ("敬师日", "Tim Cook") carries too few words to check on its own: it must appear
# verbatim in a sentence that also covers this share of the question's content words.
SHORT_CLAIM_GRAMS = 6
QUESTION_COVERAGE = 0.4
MAX_QUOTE_CHARS = 320

_DIGITS = r"\d+(?:\s*[-–]\s*\d+)?"
_LIST = rf"{_DIGITS}(?:\s*[,，、;；]\s*{_DIGITS})*"
MARKER_RE = re.compile(
    rf"\[\s*(?:source|sources|来源|资料|文档)?\s*({_LIST})\s*\]|【\s*(?:来源|资料|文档)?\s*({_LIST})\s*】",
    re.IGNORECASE,
)
_SPACED_MARKER_RE = re.compile(r"[ \t]*(?:" + MARKER_RE.pattern + ")", re.IGNORECASE)
_PLACEHOLDER_RE = re.compile(r"[ \t]*[\[【]\s*n\s*[\]】]")
_NESTED_PLACEHOLDER_RE = re.compile(r"\[\s*n\s*(\[\s*\d+\s*\])\s*\]")  # "[n [1]]" -> "[1]"
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9])\d+(?:[.,]\d+)*")  # "Q3"/"FY2023" are names, "$5.2" is a number
_NEXT_WORD = re.compile(r"[ \t]?(?:%|percent\b)?[ \t]*([A-Za-z][A-Za-z'’]*)")
_LIST_PREFIX = re.compile(r"^\s*(?:\d{1,2}[.)、]\s+|[-*•]\s+|#+\s+)")
_SENTENCE_END = "。！？!?；;"
_ABBREV = frozenset(
    ["inc", "corp", "co", "ltd", "llc", "plc", "mr", "mrs", "ms", "dr", "st", "no", "vs", "etc", "e.g", "i.e", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "fig", "approx", "dept", "est"]
)
_CLOSERS = "”’\"'）)」』》】]"

EN_STOP = frozenset(
    ["a", "an", "the", "of", "and", "or", "to", "in", "on", "at", "for", "by", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does", "did", "has", "have", "had", "not", "no", "than", "then", "there", "their", "they", "them", "we", "our", "you", "your", "he", "she", "his", "her", "i", "me", "my", "into", "about", "over", "under", "per", "also", "according", "source", "sources", "document", "documents", "based", "stated", "states", "say", "says", "said", "mentioned", "mention", "provided", "text", "information", "answer", "following", "shown", "show", "shows", "given"]
)
ZH_STOP_GRAMS = frozenset(
    ["根据", "据资", "资料", "料中", "料显", "显示", "文档", "档中", "档显", "提到", "中提", "所述", "来源", "可知", "我们", "以上", "上资", "如下"]
)
# Question words: they never appear in the passage that answers the question.
ZH_QUESTION_GRAMS = frozenset(
    ["什么", "是什", "哪里", "哪个", "哪一", "哪些", "哪位", "哪年", "多少", "是谁", "为什", "怎么", "怎样", "如何", "是否", "是哪", "有多", "几个", "请问", "么时"]
)

REFUSAL_PATTERNS = re.compile(
    r"(documents?|sources?|context|text|passages?)\s+(do|does|did)\s+not\s+(say|mention|contain|provide|specify|state|include)"
    r"|(don't|doesn't|do not|does not|cannot|can't|could not|couldn't|unable to)\s+(find|determine|answer|locate|know)"
    r"|no (relevant |such |specific )?(information|mention|data|answer)"
    r"|not (mentioned|provided|specified|stated|available|found) in"
    r"|没有(相关|提到|提及|提供|找到|涉及|说明|明确)|未(提及|提到|提供|找到|说明|涉及|披露)|无(法回答|法确定|相关信息)|不包含|并未(提及|说明|提到)",
    re.IGNORECASE,
)


# --- features ---------------------------------------------------------------------------------


def _norm_number(raw: str) -> str:
    value = raw.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".") or "0"
    return value.lstrip("0") or "0"


@dataclass(slots=True)
class Features:
    grams: set[str]
    numbers: set[str]
    # number -> the Chinese unit or measure word right after it ("" for none): "18名" is not "18个"
    units: dict[str, set[str]] = field(default_factory=dict)


def features(text: str) -> Features:
    """Content grams (Chinese character bigrams, stemmed English words, numbers) and the numbers alone."""
    text = MARKER_RE.sub(" ", text)
    grams: set[str] = set()
    for run in _CJK_RUN.findall(text):
        if len(run) == 1:
            grams.add(run)
        grams.update(run[i : i + 2] for i in range(len(run) - 1))
    grams -= ZH_STOP_GRAMS
    for word in _WORD.findall(text):
        w = word.lower().replace("’", "'").removesuffix("'s")
        if w not in EN_STOP and len(w) > 1:
            grams.add(stem(w))
    flat = text.replace("，", ",")
    units: dict[str, set[str]] = {}
    for m in _NUMBER.finditer(flat):
        after = flat[m.end() : m.end() + 1]
        unit = after if _CJK_RUN.match(after) else ""
        if not unit and (word := _NEXT_WORD.match(flat, m.end())):  # "907 employees", "47 new stores"
            w = word.group(1).lower()
            unit = "" if w in EN_STOP or len(w) < 2 else "en:" + stem(w)
        units.setdefault(_norm_number(m.group()), set()).add(unit)
    numbers = set(units)
    grams |= numbers
    return Features(grams, numbers, units)


def missing_numbers(claim: Features, source: Features, allowed: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The claim's numbers the source lacks, or has without what they count: a Chinese unit must
    follow the number there too ("18个课室" does not back "18名学生"); the English word that follows
    it ("907 employees") must be in the passage, which may be a table row and its header. A number
    the question gave (`allowed`) need not be there."""
    missing = set()
    for number in claim.numbers - set(allowed):
        have = source.units.get(number)
        wanted = claim.units.get(number, set()) - {""}
        zh = {u for u in wanted if not u.startswith("en:")}
        en = {u[3:] for u in wanted - zh}
        if have is None or not en <= source.grams or (zh and "" not in have and not zh <= have):
            missing.add(number)
    return missing


@dataclass(slots=True)
class Support:
    score: float  # share of the claim's grams present in the source
    numbers_ok: bool
    missing_numbers: set[str] = field(default_factory=set)

    def passes(self, threshold: float = SUPPORT_THRESHOLD) -> bool:
        return self.numbers_ok and self.score >= threshold


def support(claim: Features, source: Features, allowed_numbers: set[str] | frozenset[str] = frozenset()) -> Support:
    """How well `source` backs `claim`; numbers from the question (`allowed_numbers`) need not be in the source."""
    if not claim.grams:
        return Support(0.0, False)
    hit = len(claim.grams & source.grams)
    missing = missing_numbers(claim, source, allowed_numbers)
    return Support(hit / len(claim.grams), not missing, missing)


def _plain(text: str) -> str:
    """Letters, digits and CJK only, lower-cased: how a short answer is looked up in a source."""
    return "".join(re.findall(r"\w", MARKER_RE.sub("", text))).lower()


@dataclass(slots=True)
class SourceFeatures:
    """A source chunk as passages (each sentence with its neighbours) and as single sentences."""

    windows: list[Features]
    sentences: list[Features]
    plains: list[str]  # each sentence's plain text


def _table_header(sentences: list[str], i: int) -> int | None:
    """Index of the header row of the markdown table sentence i belongs to (None outside tables)."""
    if not sentences[i].lstrip().startswith("|"):
        return None
    while i > 0 and sentences[i - 1].lstrip().startswith("|"):
        i -= 1
    return i


def source_features(text: str, window: int = WINDOW_SENTENCES) -> SourceFeatures:
    """Windows of `window` sentences either side of each sentence; a table row keeps its header row."""
    sentences = [text[a:b] for a, b in split_sentences(text)] or [text]
    windows: list[Features] = []
    for i in range(len(sentences)):
        part = sentences[max(0, i - window) : i + window + 1]
        header = _table_header(sentences, i)
        if header is not None and header < i - window:
            part = [sentences[header], *part]
        windows.append(features("\n".join(part)))
    return SourceFeatures(windows, [features(x) for x in sentences], [_plain(x) for x in sentences])


def best_support(claim: Features, source: SourceFeatures, allowed: set[str] | frozenset[str] = frozenset()) -> Support:
    """The best support any one passage of `source` gives `claim` (a passing one before a higher score)."""
    best = Support(0.0, False)
    for window in source.windows:
        sup = support(claim, window, allowed)
        if (sup.passes(), sup.score) > (best.passes(), best.score):
            best = sup
    return best


_NAME = re.compile(r"(?<=[\w,;:'’\"”)] )[A-Z][a-z]+")  # a capitalised word not starting its sentence


def question_features(question: str) -> Features:
    """The question's content grams, question words removed."""
    f = features(question)
    return Features(f.grams - ZH_QUESTION_GRAMS, f.numbers)


def question_names(question: str) -> set[str]:
    """Names the question asks about ("China", "Kenvue"): a short answer must stand where they do."""
    return {stem(m.lower()) for m in _NAME.findall(question)} - EN_STOP


def short_answer_support(
    answer: str,
    claim: Features,
    question: Features,
    source: SourceFeatures,
    allowed: set[str] | frozenset[str] = frozenset(),
    names: set[str] | frozenset[str] = frozenset(),
) -> Support:
    """Support for a short answer: it stands in a sentence that is about the question.

    A short answer has too few words of its own to check, so where it stands must cover enough of
    the question: "斯克里普斯" in "斯克里普斯委托建筑师设计教堂" does not answer "第一任牧师是谁". A name
    must appear verbatim and is judged by its own sentence; a figure is anchored by one of its
    numbers and judged by its passage (which must hold all its numbers), since "人口15518人。" or a
    table row rarely repeats the subject its paragraph or header gives. Names the question asks
    about must all be in that passage: "127" stores in a table without "China" is no answer to
    "how many stores in China"."""
    needle = _plain(answer)
    best = Support(0.0, False)
    if (len(needle) < 2 and not claim.numbers) or not question.grams:
        return best
    for i, (sentence, plain) in enumerate(zip(source.sentences, source.plains)):
        if claim.numbers:
            context = source.windows[i]
            if not claim.numbers & sentence.numbers or missing_numbers(claim, context, allowed):
                continue
        elif needle in plain:
            context = sentence
        else:
            continue
        if not names <= source.windows[i].grams:
            continue
        score = len(question.grams & context.grams) / len(question.grams)
        if score > best.score:
            best = Support(score, True)
    return best


def is_short_claim(claim: Features) -> bool:
    """A name or a bare figure ("敬师日", "907", "5.3港元"): too few words besides its numbers to check."""
    return len(claim.grams - claim.numbers) < SHORT_CLAIM_GRAMS


def is_refusal(text: str) -> bool:
    """True when the text says the documents do not contain the answer."""
    return bool(REFUSAL_PATTERNS.search(text))


# --- splitting --------------------------------------------------------------------------------


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of `text` (Chinese and English terminators, newlines).

    Closing quotes and citation markers right after a terminator stay with the sentence before
    them, so "营收为5亿元。[1]" is one sentence that carries its marker.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        end: int | None = None
        if ch == "|" and not text[start:i].strip():  # a table row is one unit, whatever its cells say
            nl = text.find("\n", i)
            row_end = n if nl < 0 else nl
            if text[i:row_end].rstrip().endswith("|"):
                spans.append((start, row_end))
                start = i = row_end + 1
                continue
        if ch == "\n":
            end = i
        elif ch in _SENTENCE_END or (
            ch == "."
            and (i + 1 >= n or text[i + 1].isspace() or text[i + 1] in "[【")
            and not (i > 0 and text[i - 1].isdigit() and i + 1 < n and text[i + 1].isdigit())
            and not _is_abbreviation(text, i)
        ):
            j = i + 1
            while True:  # absorb closers and markers: 。[1] / ." [2][3]
                while j < n and text[j] in _CLOSERS:
                    j += 1
                k = j
                while k < n and text[k] == " ":
                    k += 1
                m = MARKER_RE.match(text, k)
                if m is None:
                    break
                j = m.end()
            end = j
        if end is not None:
            if text[start:end].strip():
                spans.append((start, end))
            start = end if ch != "\n" else end + 1
            i = max(i + 1, start)
            continue
        i += 1
    if text[start:].strip():
        spans.append((start, n))
    return [_strip_span(text, s, e) for s, e in spans]


def _is_abbreviation(text: str, dot: int) -> bool:
    """'Inc.', 'U.S.', 'e.g.' or a single initial ('J. Smith') before the dot at `dot`."""
    j = dot
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot].lower()
    return word in _ABBREV or (len(word) == 1 and word.isalpha() and text[dot - 1].isupper())


def _strip_span(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _marker_numbers(m: re.Match[str]) -> list[int]:
    body = m.group(1) or m.group(2) or ""
    out: list[int] = []
    for part in re.split(r"[,，、;；]", body):
        part = part.strip()
        if not part:
            continue
        if re.search(r"[-–]", part):
            lo, hi = (int(x) for x in re.split(r"\s*[-–]\s*", part))
            out.extend(range(lo, min(hi, lo + 20) + 1))
        else:
            out.append(int(part))
    return out


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """Every citation marker in `text` as (start, end, [numbers]); `[1, 3]`, `[2-4]` and `【1】` included."""
    return [(m.start(), m.end(), _marker_numbers(m)) for m in MARKER_RE.finditer(text)]


# --- quotes -----------------------------------------------------------------------------------


def _source_sentences(text: str) -> list[str]:
    """Candidate quotes from a chunk: its sentences, long ones cut into clause windows."""
    out: list[str] = []
    for s, e in split_sentences(text):
        sentence = text[s:e]
        if len(sentence) < 2:
            continue
        if len(sentence) <= MAX_QUOTE_CHARS:
            out.append(sentence)
            continue
        clauses = [c for c in re.split(r"(?<=[，,：:；;])", sentence) if c]
        window = ""
        for clause in clauses:
            if len(window) + len(clause) > MAX_QUOTE_CHARS and window:
                out.append(window.strip())
                window = ""
            window += clause
            if len(window) > MAX_QUOTE_CHARS:
                out.append(window[:MAX_QUOTE_CHARS].strip())
                window = ""
        if window.strip():
            out.append(window.strip())
    return out


_EDGE_CHARS = 120  # how far a quote cut by a chunk boundary is extended to its sentence's ends


def _complete_sentence(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen text[start:end] to whole-sentence edges when a chunk boundary cut the sentence."""
    ends = _SENTENCE_END + ".\n"
    if end < len(text) and text[end - 1] not in ends + _CLOSERS:
        j = end
        while j < len(text) and j - end < _EDGE_CHARS and text[j] not in ends:
            j += 1
        if j < len(text) and j - end < _EDGE_CHARS and text[j] != "\n":
            end = j + 1
            while end < len(text) and text[end] in _CLOSERS:
                end += 1
    if start > 0 and text[start - 1] not in ends + " \t":
        i = start
        while i > 0 and start - i < _EDGE_CHARS and text[i - 1] not in ends:
            i -= 1
        if start - i < _EDGE_CHARS:
            while i < start and text[i].isspace():
                i += 1
            start = i
    return start, end


def _sentence_tail(text: str) -> str:
    """The unfinished sentence at the end of `text` (empty when it ends one, or when it runs too long)."""
    head = text[-_EDGE_CHARS:]
    cut = max(max(head.rfind(ch) for ch in _SENTENCE_END + "\n"), head.rfind(". "))
    if cut < 0:
        return head if len(text) <= _EDGE_CHARS else ""
    return head[cut + 1 :]


def _sentence_head(text: str) -> str:
    """The rest of a sentence cut at the start of `text`, up to its end (empty when it runs too long)."""
    tail = text[:_EDGE_CHARS]
    stops = [i for i in (tail.find(ch) for ch in _SENTENCE_END + "\n") if i >= 0]
    if (dot := tail.find(". ")) >= 0:
        stops.append(dot)
    return tail[: min(stops) + 1] if stops else ""


class QuoteLocator:
    """Finds the exact quote for a claim on the page(s) a chunk comes from."""

    def __init__(self, page_text: PageText | None) -> None:
        self._page_text = page_text
        self._pages: dict[tuple[str, int], str | None] = {}

    def page(self, doc_id: str, number: int) -> str | None:
        key = (doc_id, number)
        if key not in self._pages:
            text: str | None = None
            if self._page_text is not None:
                try:
                    text = self._page_text(doc_id, number)
                except (CiteqaError, LookupError):  # document removed meanwhile / no such page: not quotable
                    text = None
            self._pages[key] = text
        return self._pages[key]

    def locate(self, claim: Features, hit: Hit, known: set[str] | frozenset[str] = frozenset()) -> Citation | None:
        """The best-matching sentence of the chunk, found verbatim on its page; None when none is.

        `known` are numbers the question already gave: they say nothing about where the answer is."""
        new_numbers = claim.numbers - set(known)
        chunk = hit.chunk
        scored: list[tuple[int, int, int, int, str]] = []
        for sentence in _source_sentences(chunk.text):
            f = features(sentence)
            overlap = len(claim.grams & f.grams)
            if overlap:
                # The claim's numbers are its checkable facts: the sentence carrying them is the evidence,
                # even when a title repeats more of the claim's words ("星河新能源…2024年年度报告").
                scored.append(
                    (len(new_numbers & f.numbers), len(claim.numbers & f.numbers), overlap, -len(sentence), sentence)
                )
        scored.sort(reverse=True)
        for *_, sentence in scored[:8]:
            found = self._find(sentence, hit)
            if found is not None:
                page, start = found
                text = self.page(chunk.doc_id, page) or ""
                start, end = _complete_sentence(text, start, start + len(sentence))
                return Citation(
                    n=0,
                    doc=chunk.doc or chunk.doc_id,
                    page=page,
                    quote=text[start:end],
                    char_start=start,
                    char_end=end,
                    verified=True,
                    chunk_id=chunk.id,
                    doc_id=chunk.doc_id,
                )
        return None

    def widened(self, hit: Hit) -> str:
        """The chunk's text with the sentences its edges cut completed from the page text.

        A chunk boundary — or a page break — can cut "2012年10月18日起，珠江台被…勒令停止播送" in two;
        the claim's passage is the whole sentence. (The quote shown stays on the chunk's own page.)"""
        chunk = hit.chunk
        text = self.page(chunk.doc_id, chunk.page_start)
        start, end = chunk.char_start, chunk.char_end
        if not text or not (0 <= start <= end <= len(text)) or not chunk.text.endswith(text[start:end]):
            return chunk.text
        before = text[:start]
        if not before.strip():
            before = (self.page(chunk.doc_id, chunk.page_start - 1) or "") if chunk.page_start > 1 else ""
        after = text[end:]
        if not after.strip():
            after = self.page(chunk.doc_id, chunk.page_start + 1) or ""
        return _sentence_tail(before) + chunk.text + _sentence_head(after)

    def _find(self, sentence: str, hit: Hit) -> tuple[int, int] | None:
        chunk = hit.chunk
        for number in range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1):
            text = self.page(chunk.doc_id, number)
            if not text:
                continue
            hint = max(0, chunk.char_start - 8) if number == chunk.page_start else 0
            pos = text.find(sentence, hint)
            if pos < 0:
                pos = text.find(sentence)
            if pos >= 0:
                return number, pos
        return None


# --- verification -----------------------------------------------------------------------------


@dataclass(slots=True)
class Verification:
    """The verified answer text, its citations (renumbered 1..m), and what could not be verified."""

    text: str
    citations: list[Citation]
    unsupported: list[str]
    refusal: bool  # the model said the documents do not answer
    removed_markers: int = 0  # markers to sources never given, or to claims nothing supports
    repointed: int = 0
    content_sentences: int = 0


@dataclass(slots=True)
class _Edit:
    start: int
    end: int
    replacement: str


def _claim_text(sentence: str, rel_start: int, prev_end: int) -> str:
    return MARKER_RE.sub("", sentence[prev_end:rel_start])


def _marker_insert_point(answer: str, s: int, e: int) -> int:
    """Where an added marker goes in sentence answer[s:e]: before its final punctuation."""
    j = e
    while j > s and (answer[j - 1] in _CLOSERS or answer[j - 1] in _SENTENCE_END or answer[j - 1] in ".:："):
        j -= 1
    return j


def verify_answer(
    answer: str,
    sources: Sequence[Hit],
    page_text: PageText | None,
    *,
    question: str = "",
    threshold: float = SUPPORT_THRESHOLD,
) -> Verification:
    """Check every cited claim of `answer` against `sources` ([1] = sources[0]) and rewrite its markers."""
    answer = _NESTED_PLACEHOLDER_RE.sub(r"\1", answer)  # "[n [1]]": the model wrapped a real marker
    answer = _PLACEHOLDER_RE.sub("", answer)  # "[n]" copied from the instructions is not a citation
    allowed = features(question).numbers if question else set()
    asked = question_features(question) if question else None
    names = question_names(question)
    locator = QuoteLocator(page_text)
    source_texts = [locator.widened(hit) for hit in sources]
    source_feats = [source_features(text) for text in source_texts]
    chunk_numbers = [features(text).numbers for text in source_texts]
    numbering: dict[tuple[str, int, int, int], int] = {}
    citations: list[Citation] = []
    unsupported: list[str] = []
    edits: list[_Edit] = []
    removed = repointed = content = 0
    refusal = False

    def cite(claim: Features, index: int) -> int | None:
        found = locator.locate(claim, sources[index], allowed)
        if found is None:
            return None
        key = (found.doc_id, found.page, found.char_start, found.char_end)
        if key not in numbering:
            numbering[key] = len(citations) + 1
            found.n = numbering[key]
            citations.append(found)
        return numbering[key]

    def backs(claim: Features, text: str, index: int, bar: float) -> float | None:
        """How well source `index` backs the claim (None: not enough)."""
        if asked is not None and is_short_claim(claim):
            sup = short_answer_support(text, claim, asked, source_feats[index], allowed & chunk_numbers[index], names)
            bar = QUESTION_COVERAGE
        elif claim.grams:
            # a number the question gave need not sit in the claim's passage — but must be in the chunk
            sup = best_support(claim, source_feats[index], allowed & chunk_numbers[index])
        else:
            return None
        return sup.score if sup.passes(bar) else None

    def cite_best(claim: Features, text: str, preferred: list[int], bar: float) -> tuple[list[int], bool]:
        """Numbers of citations backing `claim`: every cited source that supports it and can be
        quoted; failing that, the best other source (re-pointed). Returns (numbers, repointed)."""
        numbers: list[int] = []
        for i in preferred:
            ok = backs(claim, text, i, bar) is not None
            if ok and (n := cite(claim, i)) is not None and n not in numbers:
                numbers.append(n)
        if numbers:
            return numbers, False
        ranked = sorted(
            ((score, -i, i) for i in range(len(sources)) if (score := backs(claim, text, i, bar)) is not None),
            reverse=True,
        )
        for _, _, i in ranked:
            if i not in preferred and (n := cite(claim, i)) is not None:
                return [n], bool(preferred)
        return [], False

    for s, e in split_sentences(answer):
        sentence = answer[s:e]
        bare = _LIST_PREFIX.sub("", _SPACED_MARKER_RE.sub("", sentence)).strip()
        if is_refusal(bare):
            refusal = True
            edits.extend(_Edit(s + a, s + b, "") for a, b, _ in parse_markers(sentence))
            continue
        markers = parse_markers(sentence)
        if not bare.strip("。.，,；;：:!！ ") or bare.endswith(("?", "？")):  # a bare marker / a question claims nothing
            edits.extend(_Edit(s + a, s + b, "") for a, b, _ in markers)
            continue
        sentence_feats = features(bare)
        if not markers:
            short = len(sentence_feats.grams) < MIN_CLAIM_GRAMS and not sentence_feats.numbers
            numbers = [] if short and asked is None else cite_best(sentence_feats, bare, [], AUTO_CITE_THRESHOLD)[0]
            if short and not numbers:
                continue  # filler ("Sure.", "是的。") — or a short answer no passage backs: not a claim
            content += 1
            if numbers:
                at = _marker_insert_point(answer, s, e)
                spacer = " " if at > 0 and answer[at - 1].isascii() and answer[at - 1].isalnum() else ""
                edits.append(_Edit(at, at, spacer + "".join(f"[{n}]" for n in numbers)))
            else:
                unsupported.append(bare)
            continue
        content += 1
        prev_end = 0
        sentence_ok = True
        for a, b, cited in markers:
            claim_text = _LIST_PREFIX.sub("", _claim_text(sentence, a, prev_end))
            prev_end = b
            claim = features(claim_text)
            if len(claim.grams) < 2:  # "According to [1], ..." — the marker stands for the whole sentence
                claim, claim_text = sentence_feats, bare
            given = [n - 1 for n in cited if 1 <= n <= len(sources)]
            removed += len(cited) - len(given)
            numbers, moved = cite_best(claim, claim_text, given, threshold) if claim.grams else ([], False)
            repointed += moved
            if not numbers:
                sentence_ok = False
                removed += len(given)
            # drop the space before a removed marker: "revenue [9]." -> "revenue."
            start = s + a
            if not numbers:
                while start > s and answer[start - 1] == " ":
                    start -= 1
            edits.append(_Edit(start, s + b, "".join(f"[{n}]" for n in numbers)))
        if not sentence_ok:
            unsupported.append(bare)

    text = answer
    for edit in sorted(edits, key=lambda ed: (ed.start, ed.end), reverse=True):
        text = text[: edit.start] + edit.replacement + text[edit.end :]
    text = _renumber_in_order(text, citations)
    unsupported = list(dict.fromkeys(unsupported))  # a model stuck in a loop repeats itself
    return Verification(text.strip(), citations, unsupported, refusal, removed, repointed, content)


def _renumber_in_order(text: str, citations: list[Citation]) -> str:
    """Make citation numbers follow first appearance in `text` (auto-added markers can come earlier)."""
    order: list[int] = []
    for _, _, numbers in parse_markers(text):
        for n in numbers:
            if n not in order:
                order.append(n)
    mapping = {old: new for new, old in enumerate(order, start=1)}
    if all(old == new for old, new in mapping.items()):
        return text
    for c in citations:
        c.n = mapping.get(c.n, c.n)
    citations.sort(key=lambda c: c.n)
    return MARKER_RE.sub(lambda m: "".join(f"[{mapping.get(n, n)}]" for n in _marker_numbers(m)), text)
