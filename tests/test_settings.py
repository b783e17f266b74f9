"""Configuration: every setting is documented, names match the operators' variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))
    # TUTOR_{id}_LLM_MODEL variables are gathered into one field.
    declared = {name.upper() for name in Settings.model_fields} - {"TUTOR_LLM_MODELS"}
    assert "TUTOR_{id}_LLM_MODEL" in text
    assert declared - documented == set(), "undocumented settings"
    assert documented - declared == set(), "documented settings the server does not read"


def test_env_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("MAX_SESSIONS=3\nMANAGEMENT_API_KEY=from-file\nSESSION_TIMEOUT_SECONDS=60\n")
    monkeypatch.setenv("MAX_SESSIONS", "7")
    settings = Settings(_env_file=env)
    assert settings.max_sessions == 7  # the environment wins
    assert settings.management_api_key.get_secret_value() == "from-file"
    assert "from-file" not in repr(settings)
    assert settings.session_timeout_seconds == 60


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_SESSIONS", "zero")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


@pytest.mark.parametrize(
    "host, beyond", [("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True), ("10.1.2.3", True)]
)
def test_loopback_detection(host: str, beyond: bool) -> None:
    assert Settings(_env_file=None, management_api_host=host).binds_beyond_loopback() is beyond


def test_engine_url_base() -> None:
    assert (
        Settings(_env_file=None, management_api_host="0.0.0.0", management_api_port=9100).public_ws_base
        == "ws://127.0.0.1:9100"
    )
    assert (
        Settings(_env_file=None, websocket_url="wss://tutor.example.com/").public_ws_base == "wss://tutor.example.com"
    )


def test_per_tutor_model_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUTOR_7_LLM_MODEL", "llama3.1:8b")
    monkeypatch.setenv("DEFAULT_LLM_MODEL", "qwen2.5:7b")
    settings = Settings(_env_file=None)
    assert settings.llm_model_for(7, "teacher-choice") == "llama3.1:8b"
    assert settings.llm_model_for(8, "teacher-choice") == "teacher-choice"
    assert settings.llm_model_for(8, None) == "qwen2.5:7b"
