"""`LEA_LOCALE`: Québec first (the default), France selectable. The prompt is read from what the
engine received (the server logs it with LEA_LOG_CONTENT=true)."""

from __future__ import annotations

import pytest

from lea_local.locales import ASR_VOCABULARY, asr_vocabulary, system_prompt_path
from lea_local.services import build_recognizer
from lea_local.settings import Settings
from tests.server import API_KEY


def _system_prompt_sent(lea) -> str:
    with lea.client() as client:
        r = lea.chat(client, "Bonjour")
    assert r.status_code == 200, r.text
    prompts = [e["prompt"] for e in lea.log_events() if e.get("event") == "llm.prompt" and "prompt" in e]
    assert prompts, "the server did not log the prompt it sent"
    system = prompts[-1][0]
    assert system["role"] == "system"
    return system["content"]


def test_the_default_prompt_is_the_quebec_brokers_assistant(server):
    sent = _system_prompt_sent(server)
    assert sent == system_prompt_path("fr-CA").read_text(encoding="utf-8").strip()
    for words in ("Québec", "courtiers", "OACIQ", "promesse d'achat", "Centris", "taxe de bienvenue", "TPS", "TVQ"):
        assert words in sent, words
    assert "Transactions" in sent  # says where to act instead of claiming it acted
    assert "€" not in sent and "compromis" not in sent


@pytest.mark.slow
def test_fr_fr_selects_the_france_prompt(make_server):
    lea = make_server({"LEA_LOCALE": "fr-FR", "LEA_LOG_CONTENT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "16"})
    sent = _system_prompt_sent(lea)
    assert sent == system_prompt_path("fr-FR").read_text(encoding="utf-8").strip()
    assert "France" in sent and "OACIQ" not in sent
    with lea.client() as client:
        health = client.get("/api/external/health", headers={"X-API-Key": API_KEY}).json()
    assert health["locale"] == "fr-FR"


def test_unknown_locale_is_refused():
    with pytest.raises(ValueError):
        Settings(_env_file=None, api_keys=API_KEY, locale="fr-BE")


@pytest.mark.parametrize("locale", ["fr-CA", "fr-FR"])
def test_recognizer_gets_the_locale_vocabulary_unless_overridden(models_dir, locale):
    settings = Settings(_env_file=None, api_keys=API_KEY, locale=locale)
    recognizer = build_recognizer(settings, models_dir / "faster-whisper-base")
    assert recognizer.initial_prompt == ASR_VOCABULARY[locale]
    assert asr_vocabulary(locale, "Rue Ontario, Hochelaga") == "Rue Ontario, Hochelaga"
    assert asr_vocabulary(locale, "") is None  # an empty setting turns the hint off
    if locale == "fr-CA":
        for word in ("OACIQ", "Centris", "promesse d'achat", "Longueuil", "Gatineau", "Lévis"):
            assert word in recognizer.initial_prompt
