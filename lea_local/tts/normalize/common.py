"""What every French reading shares: Markdown and emoji stripping, cardinals and decimals,
dates, times, percentages, metric units, ordinals, titles, and the pipeline that runs a
locale's passes.

A locale (`fr_fr`, `fr_ca`) is a list of abbreviations, a list of ordered passes and a list of
leftover symbols; `normalize` runs them the same way for every locale. The specific patterns
(phones, dates, amounts with their unit) must come before the generic number pass, which would
otherwise take their digits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from num2words import num2words

Replacement = str | Callable[[re.Match[str]], str]
Pass = tuple[re.Pattern[str], Replacement]

SPACE = "[ \u00a0\u202f]"  # space, no-break space, narrow no-break space (French thousands)
NUMBER = rf"\d{{1,3}}(?:{SPACE}\d{{3}})+|\d+"
DECIMAL = rf"(?P<int>{NUMBER})(?:,(?P<frac>\d+))?"

MONTHS = [
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
]  # fmt: skip


def cardinal(n: int, *, feminine: bool = False) -> str:
    words = num2words(n, lang="fr")
    if feminine and (words == "un" or words.endswith(" un") or words.endswith("-un")):
        words = words[:-2] + "une"
    return words


def digits_value(text: str) -> int:
    return int(re.sub(SPACE, "", text))


def decimal_words(integer: str, fraction: str | None) -> str:
    """ "3", "5" → "trois virgule cinq"; "3", "05" → "trois virgule zéro cinq"."""
    words = cardinal(digits_value(integer))
    if fraction:
        zeros = len(fraction) - len(fraction.lstrip("0"))
        rest = fraction.lstrip("0")
        words += " virgule " + " ".join(["zéro"] * zeros + ([cardinal(int(rest))] if rest else []))
    return words


def value(integer: str, fraction: str | None) -> float:
    return float(f"{digits_value(integer)}.{fraction or 0}")


def cents_words(fraction: str | None) -> str:
    """The cents said after the currency ("douze euros cinquante"); empty when there are none."""
    if not fraction or not int(fraction):
        return ""
    return " " + cardinal(int(fraction.ljust(2, "0")[:2]))


# --- Markdown and emoji --------------------------------------------------------------------

_MARKDOWN = [
    (re.compile(r"```.*?```", re.S), " "),  # code blocks say nothing aloud
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: keep the text
    (re.compile(r"https?://\S+"), " "),
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.M), ""),  # headings
    (re.compile(r"^\s{0,3}>\s?", re.M), ""),  # quotes
    (re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M), ""),  # list markers
    (re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$", re.M), " "),  # rules
    (re.compile(r"^\s*\|?(?:\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*$", re.M), " "),  # table separator rows
    (re.compile(r"^[ \t]*\|[ \t]*|[ \t]*\|[ \t]*$", re.M), ""),  # table row edges
    (re.compile(r"[ \t]*\|[ \t]*"), ", "),  # table cells
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),  # italic
    (re.compile(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
]


def _is_emoji(ch: str) -> bool:
    code = ord(ch)
    return (
        0x1F000 <= code <= 0x1FAFF
        or 0x2600 <= code <= 0x27BF
        or 0x2B00 <= code <= 0x2BFF
        or code in (0x200D, 0xFE0F, 0xFE0E, 0x20E3)
        or (code >= 0x2100 and unicodedata.category(ch) == "So")  # not °, ©, ®
    )


def strip_markdown_and_emoji(text: str) -> str:
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return "".join(" " if _is_emoji(ch) else ch for ch in text)


# --- Readings both locales share -------------------------------------------------------------


def read_date(match: re.Match[str]) -> str:
    """Groups d, m and optionally y (2 or 4 digits) and article ("le ")."""
    day, month, year = int(match["d"]), int(match["m"]), match.groupdict().get("y")
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return match.group(0)
    article = match.groupdict().get("article") or ""
    words = f"{article}{'premier' if day == 1 else cardinal(day)} {MONTHS[month - 1]}"
    if year:
        words += " " + cardinal(int(year) + (2000 if len(year) == 2 else 0))
    return words


def read_time(match: re.Match[str]) -> str:
    hours, minutes = int(match["h"]), match["min"]
    words = f"{cardinal(hours, feminine=True)} heure{'s' if hours > 1 else ''}"
    if minutes and int(minutes):
        words += " " + cardinal(int(minutes), feminine=True)
    return words


def read_percent(match: re.Match[str]) -> str:
    return f"{decimal_words(match['int'], match['frac'])} pour cent"


def read_metric_surface(match: re.Match[str]) -> str:
    plural = value(match["int"], match["frac"]) >= 2
    unit = "mètre" + ("s" if plural else "") + (" carré" if match["unit"] in ("²", "2") else " cube")
    return f"{decimal_words(match['int'], match['frac'])} {unit}{'s' if plural else ''}"


def read_distance(match: re.Match[str]) -> str:
    plural = value(match["int"], match["frac"]) >= 2
    unit = {"km": "kilomètre", "m": "mètre", "cm": "centimètre"}[match["unit"]]
    return f"{decimal_words(match['int'], match['frac'])} {unit}{'s' if plural else ''}"


def read_ordinal(match: re.Match[str]) -> str:
    n, suffix = int(match["n"]), match["suffix"].lower()
    if n == 1:
        return "première" if suffix in ("re", "ère", "ere") else "premier"
    if n == 2 and suffix in ("nd", "nde"):
        return "second" if suffix == "nd" else "seconde"
    return num2words(n, lang="fr", to="ordinal")


def read_number(match: re.Match[str]) -> str:
    return decimal_words(match["int"], match["frac"])


TITLES_AND_ABBREVIATIONS: list[tuple[str, str]] = [
    (r"\bMM\.", "Messieurs"),
    (r"\bM\.(?=\s+[A-ZÉÈ])", "Monsieur"),
    (r"\bMmes\b", "Mesdames"),
    (r"\bMme\b", "Madame"),
    (r"\bMlles\b", "Mesdemoiselles"),
    (r"\bMlle\b", "Mademoiselle"),
    (r"\bDr\b\.?", "Docteur"),
    (r"\bMe\b(?=\s+[A-ZÉÈ])", "Maître"),
    (r"\b[nN]°\s*", "numéro "),
    (r"\betc\.", "et cetera"),
    (r"\bcf\.", "voir"),
    (r"\benv\.", "environ"),
    (r"\btél\.", "téléphone"),
    (r"\bRDC\b", "rez-de-chaussée"),
    (r"\bqqn\b", "quelqu'un"),
    (r"\bqqch\b", "quelque chose"),
]

DATE_DMY = re.compile(r"(?<![\d/])(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4}|\d{2})(?![\d/])")
# … and without the year where "le 12/03" makes it a date rather than a fraction
DATE_DM_AFTER_ARTICLE = re.compile(r"(?P<article>\b(?:le|du|au) )(?P<d>\d{1,2})/(?P<m>\d{1,2})(?![\d/])", re.I)
ROUND_THE_CLOCK: list[Pass] = [
    (re.compile(r"(?<!\d)24\s?h\s?/\s?24\b"), "vingt-quatre heures sur vingt-quatre"),
    (re.compile(r"(?<!\d)7\s?j\s?/\s?7\b"), "sept jours sur sept"),
]
TIMES: list[Pass] = [  # 14h30, 14 h 30, 9h, 14:30
    (re.compile(r"(?<![\d,])(?P<h>[01]?\d|2[0-3])\s?[hH](?:\s?(?P<min>[0-5]\d))?(?![\w])"), read_time),
    (re.compile(r"(?<![\d,:])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?![\d:])"), read_time),
]
MINUS: Pass = (re.compile(r"(?<![\w\-])[-−](?=\d)"), "moins ")  # not a hyphen inside a word or a range
PERCENT: Pass = (re.compile(rf"{DECIMAL}\s?(?:%|pour\s?cent\b)"), read_percent)
METRIC_SURFACE: Pass = (re.compile(rf"{DECIMAL}\s?m(?P<unit>²|2|³|3)(?![\w])"), read_metric_surface)
DISTANCE: Pass = (re.compile(rf"{DECIMAL}\s?(?P<unit>km|cm|m)(?![\w²³])"), read_distance)
ORDINAL: Pass = (
    re.compile(r"(?<![\w,])(?P<n>\d+)(?P<suffix>er|re|ère|ere|ème|eme|e|nde|nd)(?!\w)"),
    read_ordinal,
)
_GENERIC_NUMBER = re.compile(rf"(?<![\w,]){DECIMAL}(?![\d])")


def normalize(
    text: str,
    abbreviations: Sequence[tuple[str, str]],
    passes: Sequence[Pass],
    symbols: Sequence[tuple[re.Pattern[str], str]],
) -> str:
    """Markdown and emoji out, the locale's readings in, numbers left over written out;
    whitespace collapsed."""
    text = strip_markdown_and_emoji(text)
    for abbreviation, expansion in abbreviations:
        text = re.sub(abbreviation, expansion, text)
    for pattern, replacement in passes:
        text = pattern.sub(replacement, text)
    for pattern, spoken in symbols:
        text = pattern.sub(spoken, text)
    text = _GENERIC_NUMBER.sub(read_number, text)
    text = re.sub(r"[*_#`~]+", " ", text)  # stray Markdown marks
    text = re.sub(r"[ \t\u00a0\u202f]+", " ", text)
    text = re.sub(r"\s*\n\s*", "\n", text)
    text = re.sub(r" ([,.])", r"\1", text)  # French keeps its space before : ; ! ?
    return text.strip()
