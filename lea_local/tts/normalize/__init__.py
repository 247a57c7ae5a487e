"""Text → what a French voice should read, per locale.

Piper (through espeak-ng) reads raw digits, symbols and Markdown badly: "550 000 $" as digits
and "dollar sign", "**PA**" with its asterisks and as the word "pa". Each locale strips Markdown
and emoji, then writes out numbers, money, surfaces, dates, times, phone numbers, codes and
abbreviations the way a broker would say them there: `fr_ca` for Québec (the default), `fr_fr`
for France. What both share lives in `common`.
"""

from __future__ import annotations

from collections.abc import Callable

from lea_local.tts.normalize import fr_ca, fr_fr

LOCALES: dict[str, Callable[[str], str]] = {
    "fr-CA": fr_ca.normalize_for_speech,
    "fr-FR": fr_fr.normalize_for_speech,
}
DEFAULT_LOCALE = "fr-CA"


def normalize_for_speech(text: str, locale: str = DEFAULT_LOCALE) -> str:
    """`text` as the voice of `locale` ("fr-CA" or "fr-FR") should read it."""
    try:
        normalize = LOCALES[locale]
    except KeyError:
        raise ValueError(f"unknown speech locale {locale!r}; expected one of {', '.join(LOCALES)}") from None
    return normalize(text)


__all__ = ["DEFAULT_LOCALE", "LOCALES", "normalize_for_speech"]
