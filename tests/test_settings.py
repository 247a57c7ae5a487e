"""The settings object: environment variables, defaults, comma lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from lea_local.settings import Settings, SettingsError


def test_defaults(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "k")
    s = Settings(_env_file=None)
    assert s.models_dir == Path("models") and s.data_dir == Path("data")
    assert s.preset == "auto"
    assert s.effective_database_url == "sqlite:///data/lea.sqlite3"
    assert s.llm_gpu_layers is None
    assert s.cors_origins == []


def test_comma_separated_keys_and_origins(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", " one , two,")
    monkeypatch.setenv("LEA_CORS_ORIGINS", "https://app.immoassist.fr, https://staging.immoassist.fr")
    s = Settings(_env_file=None)
    assert s.require_api_keys() == [b"one", b"two"]
    assert s.cors_origins == ["https://app.immoassist.fr", "https://staging.immoassist.fr"]


def test_missing_key_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("AGENT_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="AGENT_API_KEY is not set"):
        Settings(_env_file=None).require_api_keys()


def test_key_is_not_shown_in_repr(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "super-secret-value")
    assert "super-secret-value" not in repr(Settings(_env_file=None))


def test_relative_llm_model_is_under_models_dir(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "k")
    monkeypatch.setenv("LEA_MODELS_DIR", "/srv/models")
    monkeypatch.setenv("LEA_LLM_MODEL", "custom/model.gguf")
    assert Settings(_env_file=None).llm_model == Path("/srv/models/custom/model.gguf")
