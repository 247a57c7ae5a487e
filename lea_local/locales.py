"""What changes with the market Léa serves (`LEA_LOCALE`): her system prompt, how the voice
reads numbers and symbols (`lea_local.tts.normalize`), and the speech recogniser's vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Locale = Literal["fr-CA", "fr-FR"]

_PROMPTS_DIR = Path(__file__).parent / "llm"


def system_prompt_path(locale: Locale) -> Path:
    """The system prompt shipped for a locale."""
    return _PROMPTS_DIR / f"system_prompt.{locale}.txt"


# Whisper's initial prompt biases it towards these spellings (place names, form codes and trade
# words it otherwise hears as common words). Short: a long prompt costs decoding time.
ASR_VOCABULARY: dict[Locale, str] = {
    "fr-CA": (
        "Courtier immobilier au Québec : OACIQ, Centris, promesse d'achat, contre-proposition, "
        "déclarations du vendeur, inspection préachat, taxe de bienvenue, TPS, TVQ. "
        "Montréal, Laval, Longueuil, Gatineau, Québec, Sherbrooke, Lévis, Trois-Rivières."
    ),
    "fr-FR": (
        "Agent immobilier : mandat de vente, compromis, acte authentique, diagnostics, "
        "notaire, syndic, copropriété, honoraires."
    ),
}


def asr_vocabulary(locale: Locale, override: str | None) -> str | None:
    """The recogniser's initial prompt: the setting when given (empty: none), else the locale's."""
    if override is not None:
        return override or None
    return ASR_VOCABULARY[locale]
