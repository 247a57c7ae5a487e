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
# words it otherwise hears as common words). A short natural sentence: measured on 15 human
# French clips, a list of words or a longer prompt cost more accuracy on ordinary speech
# (WER 0.280 without a prompt; 0.286 with the fr-CA sentence, 0.291–0.352 with others tried).
ASR_VOCABULARY: dict[Locale, str] = {
    "fr-CA": "Une promesse d'achat sur Centris à Longueuil, à Gatineau ou à Lévis, selon les formulaires de l'OACIQ.",
    "fr-FR": "L'agent immobilier prépare le mandat de vente, le compromis et les diagnostics avec le notaire.",
}


def asr_vocabulary(locale: Locale, override: str | None) -> str | None:
    """The recogniser's initial prompt: the setting when given (empty: none), else the locale's."""
    if override is not None:
        return override or None
    return ASR_VOCABULARY[locale]
