"""Text → what a French voice should read. Piper (through espeak-ng) reads raw digits, symbols
and Markdown badly: "350 000 €" as "trois cent cinquante zéro zéro zéro euro sign", "**T3**" with
its asterisks. This module strips Markdown and emoji, then writes out numbers, money,
percentages, surfaces, apartment types, ordinals, dates, times, phone numbers and common
abbreviations the way an agent would say them.

The passes run in a fixed order: the specific patterns (phone numbers, dates, times, amounts
with their unit) before the generic number pass, which would otherwise take their digits.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

_SPACE = "[ \u00a0\u202f]"  # space, no-break space, narrow no-break space (French thousands)
_NUMBER = rf"\d{{1,3}}(?:{_SPACE}\d{{3}})+|\d+"
_DECIMAL = rf"(?P<int>{_NUMBER})(?:,(?P<frac>\d+))?"

MONTHS = [
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
]  # fmt: skip


def cardinal(n: int, *, feminine: bool = False) -> str:
    words = num2words(n, lang="fr")
    if feminine and (words == "un" or words.endswith(" un") or words.endswith("-un")):
        words = words[:-2] + "une"
    return words


def _digits(text: str) -> int:
    return int(re.sub(_SPACE, "", text))


def decimal_words(integer: str, fraction: str | None) -> str:
    """ "3", "5" → "trois virgule cinq"; "3", "05" → "trois virgule zéro cinq"."""
    words = cardinal(_digits(integer))
    if fraction:
        zeros = len(fraction) - len(fraction.lstrip("0"))
        rest = fraction.lstrip("0")
        words += " virgule " + " ".join(["zéro"] * zeros + ([cardinal(int(rest))] if rest else []))
    return words


def _value(integer: str, fraction: str | None) -> float:
    return float(f"{_digits(integer)}.{fraction or 0}")


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


# --- French readings ------------------------------------------------------------------------


def _phone(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if match.group(0).startswith("+") or digits.startswith("0033"):
        national = digits[2:] if digits.startswith("33") else digits[4:]
        head = ["plus trente-trois", cardinal(int(national[0]))]
        pairs = [national[i : i + 2] for i in range(1, 9, 2)]
    else:
        head = []
        pairs = [digits[i : i + 2] for i in range(0, 10, 2)]
    spoken = [("zéro " + cardinal(int(p[1]))) if p[0] == "0" else cardinal(int(p)) for p in pairs]
    return ", ".join(head + spoken)


def _date(match: re.Match) -> str:
    day, month, year = int(match["d"]), int(match["m"]), match.groupdict().get("y")
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return match.group(0)
    words = f"{match.groupdict().get('article') or ''}{'premier' if day == 1 else cardinal(day)} {MONTHS[month - 1]}"
    if year:
        words += " " + cardinal(int(year) + (2000 if len(year) == 2 else 0))
    return words


def _time(match: re.Match) -> str:
    hours, minutes = int(match["h"]), match["min"]
    words = f"{cardinal(hours, feminine=True)} heure{'s' if hours > 1 else ''}"
    if minutes and int(minutes):
        words += " " + cardinal(int(minutes), feminine=True)
    return words


def _money(match: re.Match) -> str:
    integer, fraction = match["int"], match["frac"]
    scale = (match["scale"] or "").lower()
    currency = "dollar" if match["cur"] in ("$", "USD", "dollars") else "euro"
    if scale in ("k", "m", "md", "mds"):
        amount = decimal_words(integer, fraction)
        unit = {"k": "mille", "m": "million", "md": "milliard", "mds": "milliard"}[scale]
        if unit != "mille" and _value(integer, fraction) >= 2:
            unit += "s"
        return f"{amount} {unit} {'de ' if unit != 'mille' else ''}{currency}s".replace("de e", "d'e")
    n = _digits(integer)
    words = cardinal(n)
    if words.endswith(("million", "millions", "milliard", "milliards")):
        words += f" d'{currency}s"
    else:
        words += f" {currency}{'s' if n >= 2 else ''}"
    if fraction and int(fraction):
        cents = fraction.ljust(2, "0")[:2]
        words += " " + cardinal(int(cents))
    return words


def _per_unit(match: re.Match) -> str:
    unit = match["unit"]
    return {"m²": " le mètre carré", "m2": " le mètre carré", "mois": " par mois", "an": " par an"}[unit]


def _percent(match: re.Match) -> str:
    return f"{decimal_words(match['int'], match['frac'])} pour cent"


def _surface(match: re.Match) -> str:
    plural = _value(match["int"], match["frac"]) >= 2
    unit = "mètre" + ("s" if plural else "") + (" carré" if match["unit"] in ("²", "2") else " cube")
    return f"{decimal_words(match['int'], match['frac'])} {unit}{'s' if plural else ''}"


def _distance(match: re.Match) -> str:
    plural = _value(match["int"], match["frac"]) >= 2
    unit = {"km": "kilomètre", "m": "mètre", "cm": "centimètre"}[match["unit"]]
    return f"{decimal_words(match['int'], match['frac'])} {unit}{'s' if plural else ''}"


def _ordinal(match: re.Match) -> str:
    n, suffix = int(match["n"]), match["suffix"].lower()
    if n == 1:
        return "première" if suffix in ("re", "ère", "ere") else "premier"
    if n == 2 and suffix in ("nd", "nde"):
        return "second" if suffix == "nd" else "seconde"
    return num2words(n, lang="fr", to="ordinal")


def _apartment(match: re.Match) -> str:
    return f"{match['letter']} {cardinal(int(match['n']))}"


def _number(match: re.Match) -> str:
    return decimal_words(match["int"], match["frac"])


_ABBREVIATIONS = [
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
    (r"\bav\.", "avenue"),
    (r"\bbd\b\.?", "boulevard"),
    (r"\btél\.", "téléphone"),
    (r"\bRDC\b", "rez-de-chaussée"),
    (r"\bTTC\b", "toutes taxes comprises"),
    (r"\bHT\b", "hors taxes"),
    (r"\bHC\b", "hors charges"),
    (r"\bCC\b", "charges comprises"),
    (r"\bSdB\b|\bSDB\b", "salle de bains"),
    (r"\bqqn\b", "quelqu'un"),
    (r"\bqqch\b", "quelque chose"),
]

_PASSES: list[tuple[re.Pattern, object]] = [
    # Phone numbers, read in pairs: 06 12 34 56 78, +33 6 12 34 56 78
    (re.compile(r"(?<![\d+])(?:(?:\+33|0033)[ .\-]?[1-9]|0[1-9])(?:[ .\-]?\d{2}){4}(?!\d)"), _phone),
    # Dates: 12/03/2025
    (re.compile(r"(?<![\d/])(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4}|\d{2})(?![\d/])"), _date),
    # … and without the year where "le 12/03" makes it a date rather than a fraction
    (re.compile(r"(?P<article>\b(?:le|du|au) )(?P<d>\d{1,2})/(?P<m>\d{1,2})(?![\d/])", re.I), _date),
    # Round-the-clock: 24h/24, 7j/7
    (re.compile(r"(?<!\d)24\s?h\s?/\s?24\b"), "vingt-quatre heures sur vingt-quatre"),
    (re.compile(r"(?<!\d)7\s?j\s?/\s?7\b"), "sept jours sur sept"),
    # Times: 14h30, 9h, 14:30
    (re.compile(r"(?<![\d,])(?P<h>[01]?\d|2[0-3])\s?[hH](?:\s?(?P<min>[0-5]\d))?(?![\w])"), _time),
    (re.compile(r"(?<![\d,:])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?![\d:])"), _time),
    # A minus sign (not a hyphen inside a word or a range)
    (re.compile(r"(?<![\w\-])[-−](?=\d)"), "moins "),
    # "€/m²", "€/mois": the price unit, read after the amount
    (re.compile(r"(?<=[€$])\s?/\s?(?P<unit>m²|m2|mois|an)\b"), _per_unit),
    # Money: 350 000 €, 1,2 M€, 450 k€, 99,90 EUR, $20
    (
        re.compile(rf"{_DECIMAL}\s?(?P<scale>k|K|M|Md|Mds)?\s?(?P<cur>€|EUR\b|euros?\b|\$|USD\b|dollars\b)"),
        _money,
    ),
    (re.compile(rf"(?P<cur>\$)\s?{_DECIMAL}(?P<scale>)"), _money),
    # Percentages
    (re.compile(rf"{_DECIMAL}\s?(?:%|pour\s?cent\b)"), _percent),
    # Surfaces and volumes: 75 m², 75 m2, 75m2, 12 m³
    (re.compile(rf"{_DECIMAL}\s?m(?P<unit>²|2|³|3)(?![\w])"), _surface),
    # Distances: 5 km, 300 m
    (re.compile(rf"{_DECIMAL}\s?(?P<unit>km|cm|m)(?![\w²³])"), _distance),
    # Ordinals: 1er, 1re, 2e, 3ème, 2nd
    (re.compile(r"(?<![\w,])(?P<n>\d+)(?P<suffix>er|re|ère|ere|ème|eme|e|nde|nd)(?!\w)"), _ordinal),
    # Apartment types: T3, F2, T1 bis
    (re.compile(r"(?<![\w-])(?P<letter>[TF])(?P<n>\d{1,2})(?![\w])"), _apartment),
]

_SYMBOLS = [(re.compile(r"\s?&\s?"), " et "), (re.compile(r"€"), " euros"), (re.compile(r"%"), " pour cent")]
_GENERIC_NUMBER = re.compile(rf"(?<![\w,]){_DECIMAL}(?![\d])")


def normalize_for_speech(text: str) -> str:
    """Markdown and emoji out, French readings in; whitespace collapsed."""
    text = strip_markdown_and_emoji(text)
    for pattern, replacement in _ABBREVIATIONS:
        text = re.sub(pattern, replacement, text)
    for pattern, replacement in _PASSES:
        text = pattern.sub(replacement, text)  # type: ignore[arg-type]
    for pattern, replacement in _SYMBOLS:
        text = pattern.sub(replacement, text)
    text = _GENERIC_NUMBER.sub(_number, text)
    text = re.sub(r"[*_#`~]+", " ", text)  # stray Markdown marks
    text = re.sub(r"[ \t\u00a0\u202f]+", " ", text)
    text = re.sub(r"\s*\n\s*", "\n", text)
    text = re.sub(r" ([,.])", r"\1", text)  # French keeps its space before : ; ! ?
    return text.strip()
