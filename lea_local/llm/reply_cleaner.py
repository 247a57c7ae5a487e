"""Make a model's reply fit to be stored and read aloud: no leaked role label, no turn written
for the other side, no Markdown, no emoji, no loop.

Regular expressions rather than a Markdown parser: replies are plain text with occasional
Markdown, and a parser would reinterpret ordinary text (a line starting "1.", a "*").
"""

from __future__ import annotations

import re

from lea_local.llm.repetition import split_sentences, truncate_repetition

_SPACE = r"[ \t\u00a0\u202f]*"
_EMPHASIS = r"[*_]*"
_APOSTROPHE = r"['’]"

# Exact labels only, followed by a colon: "Assistance juridique : …" is not one.
_OWN_LABELS = (
    rf"(?:l{_APOSTROPHE})?assistante?",
    r"l[ée]a",
    r"ai",
    r"ia",
    r"bot",
    r"r[ée]ponse",
    r"response",
    r"answer",
    r"r[ée]ponse de l[ée]a",
    rf"r[ée]ponse de l{_APOSTROPHE}assistante?",
)
_OWN_LABEL = re.compile(
    rf"^{_SPACE}(?:#+{_SPACE})?{_EMPHASIS}(?:{'|'.join(_OWN_LABELS)}){_EMPHASIS}{_SPACE}[:：]{_EMPHASIS}{_SPACE}",
    re.IGNORECASE | re.MULTILINE,
)
# A bare role line, as a chat template prints it ("assistant\n").
_ROLE_LINE = re.compile(r"^\s*(?:<\|im_start\|>)?\s*assistant\s*\n", re.IGNORECASE)

_OTHER_LABELS = (
    rf"(?:l{_APOSTROPHE})?utilisat(?:eur|rice)",
    r"user",
    r"cliente?",
    r"humaine?",
    r"human",
    r"syst[èe]me",
    r"system",
)
# The model writing the other side of the dialogue: everything from there on goes.
_OTHER_TURN = re.compile(
    rf"\n{_SPACE}(?:#+{_SPACE})?{_EMPHASIS}(?:{'|'.join(_OTHER_LABELS)}){_EMPHASIS}{_SPACE}[:：]",
    re.IGNORECASE,
)
# Chat-template control tokens of the usual families (ChatML, Llama 3, Mistral, Gemma…).
_CONTROL_TOKEN = re.compile(
    r"<\|[a-z_]+\|>|</?s>|\[/?INST\]|<(?:start|end)_of_turn>|^#{2,}\s*(?:instruction|user|human)\b",
    re.IGNORECASE | re.MULTILINE,
)

_CODE_FENCE = re.compile(r"^\s*(?:```|~~~).*$", re.MULTILINE)
_HORIZONTAL_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.MULTILINE)
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$", re.MULTILINE)
_HEADING = re.compile(r"^\s*#{1,6}\s+", re.MULTILINE)
_BLOCKQUOTE = re.compile(r"^\s*(?:>\s*)+", re.MULTILINE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•·–—]|\d{1,2}[.)])\s+", re.MULTILINE)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_INLINE_CODE = re.compile(r"`+([^`]*)`+")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"\*(?=\S)([^*]+?)(?<=\S)\*")
_ITALIC_UNDERSCORE = re.compile(r"(?<!\w)_(?=\S)([^_]+?)(?<=\S)_(?!\w)")
_STRIKE = re.compile(r"~~(.+?)~~")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, flags, supplemental symbols
    "\u2600-\u27bf"  # miscellaneous symbols and dingbats (☀ ✅ ✨)
    "\u2b00-\u2bff"  # stars and squares (⭐ ⬛)
    "\u2300-\u23ff"  # technical symbols used as emoji (⌚ ⏰)
    "\ufe0f\ufe0e\u200d\u20e3"  # variation selectors, joiner, keycap
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags)
    "]+"
)
_SPACE_BEFORE_PERIOD = re.compile(r"[ \t]+([.,])(?!\d)")
_SENTENCE_END = ".!?…:;,"
_WHITESPACE = re.compile(r"\s+")
_FRENCH_SPACES = ("\u00a0", "\u202f")  # before ":", "?", "»"… : kept, they are typography


def clean_reply(text: str) -> str:
    """`text` as plain sentences to store and speak; "" when nothing remains."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ROLE_LINE.sub("", text, count=1)
    text = _cut_at(text, _CONTROL_TOKEN)
    text = _cut_at(text, _OTHER_TURN)
    text = _strip_markdown(text)
    while (unlabelled := _OWN_LABEL.sub("", text)) != text:  # "Assistant : Léa : …"
        text = unlabelled
    text = _SPACE_BEFORE_PERIOD.sub(r"\1", _EMOJI.sub("", text))  # "vente ✅." → "vente."
    text = _join_lines(text)
    return truncate_repetition(text).strip()


def _cut_at(text: str, pattern: re.Pattern[str]) -> str:
    match = pattern.search(text)
    return text if match is None else text[: match.start()]


def _strip_markdown(text: str) -> str:
    text = _CODE_FENCE.sub("", text)
    text = _HORIZONTAL_RULE.sub("", text)
    text = _TABLE_SEPARATOR.sub("", text)
    text = "\n".join(_table_row(line) for line in text.split("\n"))
    text = _HEADING.sub("", text)
    text = _BLOCKQUOTE.sub("", text)
    text = _LIST_MARKER.sub("", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _BOLD.sub(r"\2", text)
    text = _ITALIC_STAR.sub(r"\1", text)
    text = _ITALIC_UNDERSCORE.sub(r"\1", text)
    text = _STRIKE.sub(r"\1", text)
    text = _HTML_BREAK.sub("\n", text)
    return text.replace("**", "").replace("*", "")


def _table_row(line: str) -> str:
    """ "| Loyer | 900 € |" → "Loyer, 900 €"."""
    stripped = line.strip()
    if not (stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1):
        return line
    cells = [cell.strip() for cell in stripped[1:-1].split("|")]
    return ", ".join(cell for cell in cells if cell)


def _join_lines(text: str) -> str:
    """One paragraph: each line (a list item, a heading, a table row) becomes a sentence."""
    lines = [_WHITESPACE.sub(_one_space, line).strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    return " ".join(line if line[-1] in _SENTENCE_END or line[-1] in "»)\"'" else line + "." for line in lines)


def _one_space(match: re.Match[str]) -> str:
    return match.group() if match.group() in _FRENCH_SPACES else " "


# --- the same text while it is generated -------------------------------------------------------

# Constructs still open at the end of the raw text, whose cleaning changes once they close.
_OPEN_LINK = re.compile(r"!?\[[^\]\n]*(?:\](?:\([^)\n]*)?)?$")
_UNDERSCORE_OPENER = re.compile(r"(?<!\w)_+(?=[^\s_])")
_UNDERSCORE_CLOSERS = {n: re.compile(rf"(?<=\S){'_' * n}(?!\w)") for n in (1, 2)}
# A label of several words ("Réponse de Léa :") is recognised only once its colon comes.
_LONG_LABEL_START = re.compile(rf"^{_SPACE}(?:#+{_SPACE})?{_EMPHASIS}(?:r[ée]ponse|response)\b", re.IGNORECASE)
_LONG_LABEL_WORDS = 3
_NGRAM_WORDS = 8  # repetition's n-gram rule (lea_local.llm.repetition.NGRAM_WORDS)
# A word of letters (an apostrophe or hyphen inside) can be sent while it grows, unless it opens
# a line and may still become a role label or a control word.
_PLAIN_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]*)*")
_LINE_START_WORDS = (
    "assistant assistante l'assistant l'assistante l’assistant l’assistante léa lea ai ia bot réponse reponse "
    "response answer utilisateur utilisatrice l'utilisateur l'utilisatrice l’utilisateur l’utilisatrice user "
    "client cliente humain humaine human système systeme system instruction"
).split()
_WORD = re.compile(r"\w+")


class ReplyStream:
    """`clean_reply` while the reply is generated: `feed` takes each raw piece and returns the new
    part of the cleaned text that can no longer change; `finish` takes the final stored text and
    returns the rest. The pieces returned, joined, are the stored text.

    What is held back: the word being written when it is not plain letters within a line (it may
    turn out a list marker, a label or a control token), a construct still open (a link, inline
    code, `_emphasis_`, `~~strike~~`, a table row, a "Réponse de Léa :" label line), a sentence
    that so far repeats an earlier one (the repeat is cut from the stored text) and, once a short
    sentence or an 8-word run has come twice, everything from there (a third time cuts at the
    second). Should the stored text still differ from what was sent (a case none of this
    foresaw), `retracted` turns True and the stored text is the truth."""

    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""
        self.retracted = False

    def feed(self, piece: str) -> str:
        self.raw += piece
        stable = stable_prefix(self.raw)
        if len(stable) <= len(self.sent) or not stable.startswith(self.sent):
            return ""  # nothing new, or a disagreement that `finish` settles
        delta, self.sent = stable[len(self.sent) :], stable
        return delta

    def finish(self, final: str) -> str:
        """The rest of `final` (the stored reply); "" and `retracted` when it does not begin
        with what was sent."""
        if not final.startswith(self.sent):
            self.retracted = True
            return ""
        rest, self.sent = final[len(self.sent) :], final
        return rest


def stable_prefix(raw: str) -> str:
    """The part of `clean_reply(raw)` that more raw text can no longer change (see ReplyStream)."""
    cleaned = clean_reply(raw)
    hold = _raw_hold(raw)
    agreed = cleaned if hold >= len(raw) else _common_prefix(cleaned, clean_reply(raw[:hold]))
    end = min(len(agreed), _repeat_hold(cleaned))
    if (growing := _growing_word_end(raw, cleaned)) is not None and growing <= end:
        return cleaned[:growing]
    # Else whole words only: the cleaned text must go on with a space after what is sent.
    while end > 0 and not (end < len(cleaned) and cleaned[end].isspace()):
        end -= 1
    while end > 0 and cleaned[end - 1].isspace():
        end -= 1
    return cleaned[:end]


def _growing_word_end(raw: str, cleaned: str) -> int | None:
    """Where the cleaned text ends when the word being written may be sent as it is (without the
    period `_join_lines` adds to an unfinished line); None when it must wait for its end."""
    line = raw[raw.rfind("\n") + 1 :]
    while (unlabelled := _OWN_LABEL.sub("", line)) != line:  # "Assistant : Léa : …"
        line = unlabelled
    tokens = line.split()
    if not tokens or line[-1].isspace() or not _PLAIN_WORD.fullmatch(word := tokens[-1]):
        return None
    opens_line = all(not any(c.isalpha() for c in token) for token in tokens[:-1])  # after markup only
    if opens_line and any(label.startswith(word.lower()) for label in _LINE_START_WORDS):
        return None
    end = len(cleaned) - 1 if cleaned.endswith(".") else len(cleaned)  # the added period
    return end if cleaned[:end].endswith(word) else None


def _raw_hold(raw: str) -> int:
    """Where the raw text's still-open constructs begin (len(raw) when none is open)."""
    holds = [len(raw)]
    line_start = raw.rfind("\n") + 1
    line = raw[line_start:]
    if line.lstrip().startswith("|"):  # a table row becomes "cell, cell" once complete
        holds.append(line_start)
    if _LONG_LABEL_START.match(line) and ":" not in line and len(line.split()) <= _LONG_LABEL_WORDS:
        holds.append(line_start)
    if raw.count("`") % 2:
        holds.append(raw.rfind("`"))
    if raw.count("~~") % 2:
        holds.append(raw.rfind("~~"))
    if (link := _OPEN_LINK.search(raw)) is not None:
        holds.append(link.start())
    for opener in _UNDERSCORE_OPENER.finditer(raw):
        closer = _UNDERSCORE_CLOSERS[min(len(opener.group()), 2)]  # "__bold__" closes with two
        if closer.search(raw, opener.end()) is None:
            holds.append(opener.start())
            break
    return min(holds)


def _repeat_hold(cleaned: str) -> int:
    """Where text that `truncate_repetition` may still cut begins in the cleaned text."""
    hold = len(cleaned)
    sentences = split_sentences(cleaned, complete=True)
    keys: list[str] = []
    for sentence in sentences:
        if sentence.key in keys:  # a second "Oui.": a third would cut here
            hold = min(hold, sentence.start)
            break
        keys.append(sentence.key)
    if sentences and any(key.startswith(sentences[-1].key) for key in keys[:-1]):
        hold = min(hold, sentences[-1].start)  # so far, the sentence being written repeats one
    words = list(_WORD.finditer(cleaned.lower()))
    texts = [w.group() for w in words]
    seen: set[tuple[str, ...]] = set()
    for first in range(len(texts) - _NGRAM_WORDS + 1):
        ngram = tuple(texts[first : first + _NGRAM_WORDS])
        if ngram in seen:  # a second time: a third would cut at this one's sentence
            start = words[first].start()
            holding = [s.start for s in sentences if s.start <= start]
            hold = min(hold, holding[-1] if holding else 0)
            break
        seen.add(ngram)
    if (run := _repeating_run(texts)) is not None:
        hold = min(hold, words[run].start())  # the last words so far repeat earlier ones
    return hold


def _repeating_run(words: list[str]) -> int | None:
    """Index of the first of the last words (an n-gram at most) that, so far, repeat a run of
    earlier words (the very last one may still be growing): they may become an n-gram's second
    occurrence."""
    n = len(words)
    for k in range(max(1, n - _NGRAM_WORDS), n):
        length = n - k
        for j in range(k):
            if words[j : j + length - 1] == words[k : n - 1] and words[j + length - 1].startswith(words[-1]):
                return k
    return None


def _common_prefix(a: str, b: str) -> str:
    end = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        end += 1
    return a[:end]
