"""One typed settings object for the whole server.

Names follow the environment variables the operators already use (see CONTRACT.md); a `.env`
file in the working directory is read too. Everything else reads `Settings`, never
`os.environ`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Where we listen. Loopback by default: exposing the server is a deliberate choice.
    management_api_host: str = "127.0.0.1"
    management_api_port: int = Field(9000, ge=1, le=65535)
    websocket_url: str | None = None
    management_api_key: SecretStr | None = None
    allow_insecure_bind: bool = False

    data_dir: Path = Path("data")
    database_url: str | None = None

    max_sessions: int = Field(10, ge=1)
    session_timeout_seconds: float = Field(3600, gt=0)
    session_sweep_seconds: float = Field(30, gt=0)

    llm_engine: str = "auto"
    llm_temperature: float = Field(0.4, ge=0, le=2)
    llm_max_tokens: int = Field(384, ge=1)
    local_llm_model_path: Path | None = None
    local_llm_context: int = Field(2048, ge=256)

    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    ws_max_pending_turns: int = Field(4, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    history_max_messages: int = Field(40, ge=0)

    ui_path: str = "/ui"
    log_level: str = "INFO"

    @field_validator("management_api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("ui_path")
    @classmethod
    def _ui_path_shape(cls, value: str) -> str:
        value = "/" + value.strip("/")
        if value == "/":
            raise ValueError("UI_PATH must not be '/': the API lives there")
        return value

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tutor.db'}"

    @property
    def public_ws_base(self) -> str:
        if self.websocket_url:
            return self.websocket_url.rstrip("/")
        host = self.management_api_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"ws://{host}:{self.management_api_port}"

    def binds_beyond_loopback(self) -> bool:
        host = self.management_api_host
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True
