"""Errors that speak to the user, in one place.

Domain code raises these; each boundary translates them once: the HTTP layer into a status with
a JSON `detail`, the WebSocket layer into a `{"type": "error"}` message, the UI into a notice.
"""

from __future__ import annotations


class TutorError(Exception):
    """Base class: `code` is stable for programs, the message is for people."""

    code = "error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class NotFound(TutorError):
    code = "not_found"
    http_status = 404


class InvalidInput(TutorError):
    code = "invalid_input"
    http_status = 422


class Unauthorized(TutorError):
    code = "unauthorized"
    http_status = 401


class SessionLimitReached(TutorError):
    code = "session_limit"
    http_status = 429


class Draining(TutorError):
    """The server is stopping (SIGTERM): it finishes what it has and takes nothing new."""

    code = "draining"
    http_status = 503


class SessionEnded(TutorError):
    code = "session_ended"
    http_status = 410


class Conflict(TutorError):
    code = "conflict"
    http_status = 409


class TooBusy(TutorError):
    code = "too_busy"
    http_status = 429


class EngineUnavailable(TutorError):
    """A stage's engine cannot serve right now (not loaded, disabled, or its server is down)."""

    code = "engine_unavailable"
    http_status = 503


class InvalidAudio(InvalidInput):
    """Audio that cannot be heard: not audio at all, unreadable, or out of bounds."""

    code = "invalid_audio"


class TooLarge(TutorError):
    code = "too_large"
    http_status = 413


class RelayUnavailable(EngineUnavailable):
    """The TURN server that carries every live call is down or refuses our credentials."""

    code = "turn_unavailable"


class BackendDown(EngineUnavailable):
    """An engine's server (Ollama) cannot be reached; a composite engine may fall back."""

    code = "llm_unreachable"
