"""France (fr-FR): euros, French phone numbers read in pairs, €/m², T3/F2, TTC/HT/HC/CC."""

from __future__ import annotations

import re

from lea_local.tts.normalize.common import (
    DATE_DM_AFTER_ARTICLE,
    DATE_DMY,
    DECIMAL,
    DISTANCE,
    METRIC_SURFACE,
    MINUS,
    ORDINAL,
    PERCENT,
    ROUND_THE_CLOCK,
    TIMES,
    TITLES_AND_ABBREVIATIONS,
    Pass,
    cardinal,
    cents_words,
    decimal_words,
    digits_value,
    normalize,
    read_date,
    value,
)


def _phone(match: re.Match[str]) -> str:
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


def _money(match: re.Match[str]) -> str:
    integer, fraction = match["int"], match["frac"]
    scale = (match["scale"] or "").lower()
    currency = "dollar" if match["cur"] in ("$", "USD", "dollars") else "euro"
    if scale in ("k", "m", "md", "mds"):
        amount = decimal_words(integer, fraction)
        unit = {"k": "mille", "m": "million", "md": "milliard", "mds": "milliard"}[scale]
        if unit != "mille" and value(integer, fraction) >= 2:
            unit += "s"
        return f"{amount} {unit} {'de ' if unit != 'mille' else ''}{currency}s".replace("de e", "d'e")
    n = digits_value(integer)
    words = cardinal(n)
    if words.endswith(("million", "millions", "milliard", "milliards")):
        words += f" d'{currency}s"
    else:
        words += f" {currency}{'s' if n >= 2 else ''}"
    return words + cents_words(fraction)


def _per_unit(match: re.Match[str]) -> str:
    unit = match["unit"]
    return {"m²": " le mètre carré", "m2": " le mètre carré", "mois": " par mois", "an": " par an"}[unit]


def _apartment(match: re.Match[str]) -> str:
    return f"{match['letter']} {cardinal(int(match['n']))}"


ABBREVIATIONS: list[tuple[str, str]] = [
    *TITLES_AND_ABBREVIATIONS,
    (r"\bav\.", "avenue"),
    (r"\bbd\b\.?", "boulevard"),
    (r"\bTTC\b", "toutes taxes comprises"),
    (r"\bHT\b", "hors taxes"),
    (r"\bHC\b", "hors charges"),
    (r"\bCC\b", "charges comprises"),
    (r"\bSdB\b|\bSDB\b", "salle de bains"),
]

PASSES: list[Pass] = [
    # Phone numbers, read in pairs: 06 12 34 56 78, +33 6 12 34 56 78
    (re.compile(r"(?<![\d+])(?:(?:\+33|0033)[ .\-]?[1-9]|0[1-9])(?:[ .\-]?\d{2}){4}(?!\d)"), _phone),
    (DATE_DMY, read_date),  # 12/03/2025
    (DATE_DM_AFTER_ARTICLE, read_date),  # le 12/03
    *ROUND_THE_CLOCK,
    *TIMES,
    MINUS,
    # "€/m²", "€/mois": the price unit, read after the amount
    (re.compile(r"(?<=[€$])\s?/\s?(?P<unit>m²|m2|mois|an)\b"), _per_unit),
    # Money: 350 000 €, 1,2 M€, 450 k€, 99,90 EUR, $20
    (
        re.compile(rf"{DECIMAL}\s?(?P<scale>k|K|M|Md|Mds)?\s?(?P<cur>€|EUR\b|euros?\b|\$|USD\b|dollars\b)"),
        _money,
    ),
    (re.compile(rf"(?P<cur>\$)\s?{DECIMAL}(?P<scale>)"), _money),
    PERCENT,
    METRIC_SURFACE,  # 75 m², 75 m2, 75m2, 12 m³
    DISTANCE,  # 5 km, 300 m
    ORDINAL,  # 1er, 1re, 2e, 3ème, 2nd
    # Apartment types: T3, F2, T1 bis
    (re.compile(r"(?<![\w-])(?P<letter>[TF])(?P<n>\d{1,2})(?![\w])"), _apartment),
]

SYMBOLS = [(re.compile(r"\s?&\s?"), " et "), (re.compile(r"€"), " euros"), (re.compile(r"%"), " pour cent")]


def normalize_for_speech(text: str) -> str:
    return normalize(text, ABBREVIATIONS, PASSES, SYMBOLS)
