"""Québec (fr-CA): what a Québec real-estate broker's assistant writes, read the way a
Québécois says it.

- Amounts put "$" after the number ("550 000 $", "1,5 M$", "450 k$", "850 $/mois").
- Surfaces in square feet ("1 200 pi²", "pi2", "pc", "p.c."), "$/pi²" as "le pied carré".
- Phones (NANP) as people say them: area code and exchange digit by digit, the last four
  digits in two pairs: "514 555-1234" → "cinq un quatre, cinq cinq cinq, douze trente-quatre";
  the toll-free "1 800" is "un huit cents". An extension is read the same way: "poste 123"
  → "poste un deux trois", "poste 12" → "poste douze", "poste 2201" → "poste vingt-deux zéro un".
- Postal codes letter by letter and digit by digit: "H2K 1E1" → "H deux K, un E un".
- OACIQ form codes and a known list of acronyms spelled ("PA" → "P A"); other uppercase words
  are left to the voice. ISO dates ("2025-07-01"), "14 h 30", "4 ½", "(Québec)", "boul.",
  "St-Denis" and the like.
"""

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

# Spelled letter by letter; only these, so that ordinary uppercase words are not spelled.
SPELLED_ACRONYMS = (
    "OACIQ", "PA", "CP", "CCVE", "CCA", "DV", "MO", "DIA",  # OACIQ forms and the regulator
    "TPS", "TVQ", "SCHL", "MLS", "RBQ", "AMF",
)  # fmt: skip

PROVINCES = {
    "Québec": "Québec", "Quebec": "Québec", "QC": "Québec", "Qc": "Québec",
    "Ontario": "Ontario", "ON": "Ontario",
    "Nouveau-Brunswick": "Nouveau-Brunswick", "NB": "Nouveau-Brunswick", "N.-B.": "Nouveau-Brunswick",
    "Nouvelle-Écosse": "Nouvelle-Écosse", "NS": "Nouvelle-Écosse", "N.-É.": "Nouvelle-Écosse",
    "Manitoba": "Manitoba", "MB": "Manitoba",
    "Saskatchewan": "Saskatchewan", "SK": "Saskatchewan",
    "Alberta": "Alberta", "AB": "Alberta",
    "Colombie-Britannique": "Colombie-Britannique", "BC": "Colombie-Britannique",
    "C.-B.": "Colombie-Britannique",
    "Île-du-Prince-Édouard": "Île-du-Prince-Édouard", "PE": "Île-du-Prince-Édouard",
    "Î.-P.-É.": "Île-du-Prince-Édouard",
    "Terre-Neuve-et-Labrador": "Terre-Neuve-et-Labrador", "NL": "Terre-Neuve-et-Labrador",
    "T.-N.-L.": "Terre-Neuve-et-Labrador",
}  # fmt: skip

_SCALES = {"k": "mille", "K": "mille", "M": "million", "G": "milliard", "Md": "milliard", "Mds": "milliard"}
_COUNTRIES = {"US": " américains", "CA": " canadiens", "CAN": " canadiens"}
_TOLL_FREE_800 = "800"


def _digit_by_digit(digits: str) -> str:
    return " ".join(cardinal(int(d)) for d in digits)


def _pair(digits: str) -> str:
    return f"zéro {cardinal(int(digits[1]))}" if digits[0] == "0" else cardinal(int(digits))


def _phone(match: re.Match[str]) -> str:
    area = match["area"] or match["area_bare"]
    line = match["line"]
    spoken_area = "huit cents" if area == _TOLL_FREE_800 else _digit_by_digit(area)
    if match["country"]:
        spoken_area = ("plus un " if match["country"].startswith("+") else "un ") + spoken_area
    return f"{spoken_area}, {_digit_by_digit(match['exchange'])}, {_pair(line[:2])} {_pair(line[2:])}"


def _extension(match: re.Match[str]) -> str:
    """Read like the end of a phone number: pairs for 2 or 4 digits, else digit by digit."""
    number = match["number"]
    if len(number) in (2, 4):
        return "poste " + " ".join(_pair(number[i : i + 2]) for i in range(0, len(number), 2))
    return f"poste {_digit_by_digit(number)}"


def _listing_number(match: re.Match[str]) -> str:
    """Centris/MLS listing numbers are identifiers, said digit by digit, not as millions."""
    return f"{match['label']}{match['between']}{_digit_by_digit(match['number'])}"


def _postal_code(match: re.Match[str]) -> str:
    first, second = match["first"], match["second"]
    return (
        f"{first[0]} {cardinal(int(first[1]))} {first[2]}, {cardinal(int(second[0]))} {second[1]} "
        f"{cardinal(int(second[2]))}"
    )


def _half(match: re.Match[str]) -> str:
    """Québec apartment sizes: "4 ½" is a "quatre et demie" (rooms, bathroom counted as half)."""
    return f"{cardinal(int(match['n']))} et demie"


def _money(match: re.Match[str]) -> str:
    integer, fraction = match["int"], match["frac"]
    currency = "euro" if match["cur"] in ("€", "EUR", "euro", "euros") else "dollar"
    country = _COUNTRIES.get(match["country"] or "", "")
    if match["cur"] == "USD":
        country = " américains"
    scale = match["scale"]
    if scale:
        unit = _SCALES.get(scale) or scale.rstrip("s")  # "millions" → "million"
        if unit != "mille" and value(integer, fraction) >= 2:
            unit += "s"
        of = "" if unit == "mille" else ("d'" if currency == "euro" else "de ")
        return f"{decimal_words(integer, fraction)} {unit} {of}{currency}s{country}".replace("d' ", "d'")
    n = digits_value(integer)
    if n == 0 and fraction and int(fraction) and currency == "dollar":
        # Québec says "cent" (the coin) as "cenne"; espeak reads "cents" as the number "cent".
        cents = int(fraction.ljust(2, "0")[:2])
        return f"{cardinal(cents, feminine=True)} cenne{'s' if cents >= 2 else ''}"
    words = cardinal(n)
    if words.endswith(("million", "millions", "milliard", "milliards")):
        words += (" d'euros" if currency == "euro" else " de dollars") + country
    else:
        words += f" {currency}{'s' if n >= 2 else ''}" + (country if n >= 2 else country.rstrip("s"))
    return words + cents_words(fraction)


_PER_UNIT = {
    "pi²": "le pied carré", "pi2": "le pied carré", "pc": "le pied carré", "p.c": "le pied carré",
    "pi.ca": "le pied carré", "m²": "le mètre carré", "m2": "le mètre carré",
    "mois": "par mois", "an": "par année", "année": "par année", "sem": "par semaine",
    "semaine": "par semaine", "jour": "par jour", "nuit": "par nuit", "h": "de l'heure",
}  # fmt: skip


def _per_unit(match: re.Match[str]) -> str:
    return f" {_PER_UNIT[match['unit']]}"


def _square_feet(match: re.Match[str]) -> str:
    plural = value(match["int"], match["frac"]) >= 2
    unit = "pieds carrés" if plural else "pied carré"
    return f"{decimal_words(match['int'], match['frac'])} {unit}"


def _linear(match: re.Match[str]) -> str:
    plural = value(match["int"], match["frac"]) >= 2
    unit = {"pi": "pied", "po": "pouce"}[match["unit"]]
    return f"{decimal_words(match['int'], match['frac'])} {unit}{'s' if plural else ''}"


def _number_and_letter(match: re.Match[str]) -> str:
    """A civic or unit number with a letter: "2643A" → "deux mille six cent quarante-trois A"."""
    return f"{cardinal(int(match['n']))} {match['letter']}"


def _bedrooms(match: re.Match[str]) -> str:
    n = match["n"]
    if n is None:
        return "chambre"
    count = int(n)
    return f"{cardinal(count, feminine=True)} chambre{'s' if count >= 2 else ''}"


def _province(match: re.Match[str]) -> str:
    return f", {PROVINCES[match['province']]}"


def _spell(match: re.Match[str]) -> str:
    return " ".join(match.group(0))


_ACRONYM = "|".join(sorted(SPELLED_ACRONYMS, key=len, reverse=True))
_PROVINCE = "|".join(re.escape(p) for p in sorted(PROVINCES, key=len, reverse=True))
_POSTAL_FIRST = "[ABCEGHJ-NPRSTVXY]"  # Canada Post never uses D, F, I, O, Q, U (nor W, Z first)
_POSTAL_OTHER = "[ABCEGHJ-NPRSTV-Z]"
_SEP = r"[ .\-\u00a0]?"
# The last dot of "p.c." is also the full stop when the sentence ends there: leave it then.
_FINAL_DOT = r"(?:\.(?!\s*$|\s+[A-ZÀ-Ý]))?"

ABBREVIATIONS: list[tuple[str, str]] = [
    *TITLES_AND_ABBREVIATIONS,
    (r"\b[bB]oul\b\.?", "boulevard"),
    (r"\b[aA]v\.", "avenue"),
    (r"\b(?:[aA]pp|[aA]ppt|[aA]pt)\.", "appartement"),
    (r"\b[sS]\.?-sol\b", "sous-sol"),
    (r"\bSt-(?=[A-ZÀ-Ý])", "Saint-"),
    (r"\bSte-(?=[A-ZÀ-Ý])", "Sainte-"),
    (r"(?<!\w)[nN]o\.?\s?(?=\d)", "numéro "),  # "app. no 4"
    (r"(?<![\w&])#\s?(?=\d)", "numéro "),  # "app. #4"
    (r"\bSDB\b|\bSdB\b|\bsdb\b", "salle de bain"),
    (r"\bTél\.", "Téléphone"),
]

PASSES: list[Pass] = [
    # "Montréal (Québec)" → "Montréal, Québec"; then a bare "QC" in an address
    (re.compile(rf"\s*\((?P<province>{_PROVINCE})\)"), _province),
    (re.compile(r"\b(?:QC|Qc)\b"), "Québec"),
    # "ch. à coucher" is a bedroom, any other "ch." a road ("ch. Chambly")
    (re.compile(r"(?:(?P<n>\d+)\s?|\b)[cC]h\.(?=\s+à\s+coucher)"), _bedrooms),
    (re.compile(r"\b[cC]h\."), "chemin"),
    # Apartment sizes: 4 ½, 4½, 5 1/2 (before dates and fractions take "1/2")
    (re.compile(r"(?<![\d/])(?P<n>\d{1,2})(?:\s?½|\s1/2)(?![\d/])"), _half),
    # Postal codes: H2K 1E1
    (
        re.compile(
            rf"(?<![\w-])(?P<first>{_POSTAL_FIRST}\d{_POSTAL_OTHER})[ \u00a0-]?(?P<second>\d{_POSTAL_OTHER}\d)(?!\w)"
        ),
        _postal_code,
    ),
    # Phones: 514 555-1234, (514) 555-1234, 514.555.1234, 1 800 555-1234, +1 514 555 1234
    (
        re.compile(
            rf"(?<![\w+])(?:(?P<country>\+?1){_SEP})?(?:\((?P<area>[2-9]\d\d)\)\s?|(?P<area_bare>[2-9]\d\d){_SEP})"
            rf"(?P<exchange>[2-9]\d\d){_SEP}(?P<line>\d{{4}})(?!\d)"
        ),
        _phone,
    ),
    (re.compile(r"\b(?:poste|ext\.?)\s?(?P<number>\d{1,6})\b", re.I), _extension),
    (re.compile(r"\b(?P<label>Centris|MLS)(?P<between>\s*(?:numéro\s*)?)(?P<number>\d{7,9})\b"), _listing_number),
    # Dates: 2025-07-01 (ISO, common in Québec), 01/07/2025, le 01/07
    (re.compile(r"(?<![\d\-])(?P<y>(?:19|20)\d\d)-(?P<m>\d\d)-(?P<d>\d\d)(?![\d\-])"), read_date),
    (DATE_DMY, read_date),
    (DATE_DM_AFTER_ARTICLE, read_date),
    *ROUND_THE_CLOCK,
    *TIMES,  # 14 h 30, 14h30, 9 h, 14:30
    MINUS,
    # "$/pi²", "$/mois": the price unit, read after the amount
    (
        re.compile(
            r"(?<=[$€])\s?/\s?(?P<unit>pi²|pi2|pi\.ca|p\.c|pc|m²|m2|mois|année|an|sem|semaine|jour|nuit|h)"
            rf"{_FINAL_DOT}(?!\w)"
        ),
        _per_unit,
    ),
    # Money: 550 000 $, 1,5 M$, 450 k$, 12,50 $, 2 millions $, 20 $ US, $20
    (
        re.compile(
            rf"{DECIMAL}\s?(?P<scale>k|K|Mds|Md|M|G|millions?|milliards?)?\s?"
            r"(?P<cur>\$|€|dollars?\b|euros?\b|CAD\b|USD\b|EUR\b)(?:\s?(?P<country>US|CAN|CA)\b)?"
        ),
        _money,
    ),
    (re.compile(rf"(?P<cur>\$)\s?{DECIMAL}(?P<scale>)(?P<country>)"), _money),
    PERCENT,  # 4,79 %
    # Dimensions: 10 x 12, 10 pi x 12 pi → "dix par douze"
    (re.compile(r"(?:(?<=\d)|(?<=\bpi)|(?<=\bpo))\s?[x×]\s?(?=\d)"), " par "),
    # Square feet: 1 200 pi², pi2, pc, p.c., pi.ca.
    (re.compile(rf"{DECIMAL}\s?(?:pi²|pi2|pi\.\s?ca{_FINAL_DOT}|p\.\s?c{_FINAL_DOT}|pc)(?![\w²])"), _square_feet),
    # Feet and inches: 12 pi, 6 po
    (re.compile(rf"{DECIMAL}\s?(?P<unit>pi|po)(?![\w²])"), _linear),
    METRIC_SURFACE,  # 75 m²
    DISTANCE,  # 5 km
    ORDINAL,  # 1er juillet, 2e étage
    # A number with a letter: 2643A, app. 4B
    (re.compile(r"(?<![\w,])(?P<n>\d+)(?P<letter>[A-Z])(?!\w)"), _number_and_letter),
    # Known acronyms spelled; "TPS/TVQ" → "T P S et T V Q"
    (re.compile(rf"\b(?P<first>{_ACRONYM})\s?/\s?(?=(?:{_ACRONYM})\b)"), r"\g<first> et "),
    (re.compile(rf"\b(?:{_ACRONYM})\b"), _spell),
]

SYMBOLS = [
    (re.compile(r"\s?&\s?"), " et "),
    (re.compile(r"\$"), " dollars"),
    (re.compile(r"€"), " euros"),
    (re.compile(r"%"), " pour cent"),
    (re.compile(r"\s?½"), " et demie"),
    (re.compile(r"[²³]"), ""),
]


def normalize_for_speech(text: str) -> str:
    return normalize(text, ABBREVIATIONS, PASSES, SYMBOLS)
