"""Short-lived TURN credentials, as coturn's `use-auth-secret` checks them (the TURN REST API):
the username is `<expiry unix time>:<who>`, the password base64(HMAC-SHA1(secret, username)).
Nothing is stored: coturn recomputes the HMAC and refuses an expired or forged one (401)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnCredentials:
    username: str
    credential: str
    expires_at: int


def issue(secret: str, ttl_seconds: int, who: str = "tutor", now: float | None = None) -> TurnCredentials:
    expires = int((time.time() if now is None else now) + ttl_seconds)
    username = f"{expires}:{who}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode(), expires)
