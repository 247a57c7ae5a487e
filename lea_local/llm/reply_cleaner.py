"""Make a model's reply fit to be stored and read aloud: no leaked role label, no turn written
for the other side, no Markdown, no emoji, no loop.

Regular expressions rather than a Markdown parser: replies are plain text with occasional
Markdown, and a parser would reinterpret ordinary text (a line starting "1.", a "*").
"""

from __future__ import annotations

import re

from lea_local.llm.repetition import truncate_repetition

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
