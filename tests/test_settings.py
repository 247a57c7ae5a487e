"""The settings object: environment variables, defaults, comma lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from lea_local.settings import Settings, SettingsError


def test_defaults(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "a-long-enough-test-key")
    s = Settings(_env_file=None)
    assert s.models_dir == Path("models") and s.data_dir == Path("data")
    assert s.preset == "auto"
    assert s.effective_database_url == "sqlite:///data/lea.sqlite3"
    assert s.llm_gpu_layers is None
    assert s.cors_origins == []
    assert s.metrics_require_key is False


def test_comma_separated_keys_and_origins(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", " key-one-0123456789 , key-two-0123456789,")
    monkeypatch.setenv("LEA_CORS_ORIGINS", "https://app.immoassist.fr, https://staging.immoassist.fr")
    s = Settings(_env_file=None)
    assert s.require_api_keys() == [b"key-one-0123456789", b"key-two-0123456789"]
    assert s.cors_origins == ["https://app.immoassist.fr", "https://staging.immoassist.fr"]


def test_missing_key_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("AGENT_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="AGENT_API_KEY is not set"):
        Settings(_env_file=None).require_api_keys()


@pytest.mark.parametrize("keys", ["Zq", "fifteen-charsZq", "a-long-enough-test-key,Zq9"])
def test_short_key_is_refused_with_the_reason(monkeypatch, keys):
    monkeypatch.setenv("AGENT_API_KEY", keys)
    with pytest.raises(SettingsError, match="AGENT_API_KEY is too short: every key needs at least 16") as caught:
        Settings(_env_file=None).require_api_keys()
    assert "Zq" not in str(caught.value)  # the key itself is not echoed


def test_sixteen_characters_are_enough(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "sixteen-chars-16")
    assert Settings(_env_file=None).require_api_keys() == [b"sixteen-chars-16"]


def test_key_is_not_shown_in_repr(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "super-secret-value")
    assert "super-secret-value" not in repr(Settings(_env_file=None))


def test_relative_llm_model_is_under_models_dir(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "a-long-enough-test-key")
    monkeypatch.setenv("LEA_MODELS_DIR", "/srv/models")
    monkeypatch.setenv("LEA_LLM_MODEL", "custom/model.gguf")
    assert Settings(_env_file=None).llm_model == Path("/srv/models/custom/model.gguf")


def test_an_embedding_server_needs_its_model_name(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "a-long-enough-test-key")
    monkeypatch.setenv("LEA_EMBEDDING_URL", "http://gpu:8081/v1")
    with pytest.raises(ValueError, match="LEA_EMBEDDING_URL needs LEA_EMBEDDING_MODEL"):
        Settings(_env_file=None)
    monkeypatch.setenv("LEA_EMBEDDING_MODEL", "bge-m3")
    assert Settings(_env_file=None).embedding_model == "bge-m3"


@pytest.mark.parametrize(
    "keys",
    [
        "change-me-to-a-long-random-key",  # the README's example
        "CHANGE_ME_please_0123456789",
        "changeme-changeme-changeme",
        "your-key-your-key-your-key",
        "secret-secret-secret-secret",
        "a-long-enough-test-key,change-me-to-a-long-random-key",
    ],
)
def test_a_placeholder_key_is_refused_with_the_reason(monkeypatch, keys):
    monkeypatch.setenv("AGENT_API_KEY", keys)
    with pytest.raises(SettingsError, match="AGENT_API_KEY is an example key") as caught:
        Settings(_env_file=None).require_api_keys()
    assert "random-key" not in str(caught.value) and "0123456789" not in str(caught.value)


def test_a_generated_key_is_not_a_placeholder(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "3f9c1e7a2b8d4c6e0a1f5b9d7e3c2a8b")
    assert Settings(_env_file=None).require_api_keys() == [b"3f9c1e7a2b8d4c6e0a1f5b9d7e3c2a8b"]


def test_the_admin_key_is_optional_comma_separated_and_checked(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", "a-long-enough-test-key")
    monkeypatch.delenv("LEA_ADMIN_API_KEY", raising=False)
    assert Settings(_env_file=None).require_admin_keys() == []
    monkeypatch.setenv("LEA_ADMIN_API_KEY", "admin-key-0123456789, next-admin-key-0123456789")
    settings = Settings(_env_file=None)
    assert settings.require_admin_keys() == [b"admin-key-0123456789", b"next-admin-key-0123456789"]
    assert "admin-key-0123456789" not in repr(settings)
    for keys, reason in (("Zq", "LEA_ADMIN_API_KEY is too short"), ("change-me-admin-key-0", "LEA_ADMIN_API_KEY is an")):
        monkeypatch.setenv("LEA_ADMIN_API_KEY", keys)
        with pytest.raises(SettingsError, match=reason) as caught:
            Settings(_env_file=None).require_admin_keys()
        assert keys not in str(caught.value)
