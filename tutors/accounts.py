"""Teacher accounts: usernames with scrypt-hashed passwords, and the CLI that makes the first
admin.

    python -m tutors.accounts create-admin <username>         # asks for the password twice
    echo "$PASSWORD" | python -m tutors.accounts create-admin <username> --password-stdin

There is no default password: the first admin comes from this command or from
ADMIN_USERNAME + ADMIN_PASSWORD at start-up.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import hmac
import re
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.core.db import Database, TeacherRow
from app.core.errors import Conflict, InvalidInput, NotFound, TooBusy
from app.core.settings import Settings

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
MIN_PASSWORD = 10
# scrypt at n=2**14: ~50 ms a check here, slow enough to blunt guessing, quick for a login.
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class Teacher:
    id: int
    username: str
    is_admin: bool
    created_at: dt.datetime


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# Checked when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


class LoginThrottle:
    """Refuses a username for a while after repeated wrong passwords, so the login form is no
    password-guessing oracle. In memory: the server is one process."""

    def __init__(self, attempts: int = 5, window_seconds: float = 300, clock: Any = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def check(self, username: str) -> None:
        recent = self._recent(username)
        if len(recent) >= self.attempts:
            wait = int(recent[0] + self.window - self._clock()) + 1
            raise TooBusy(f"too many failed logins for {username!r}; try again in {wait} s")

    def failed(self, username: str) -> None:
        self._failures[username] = [*self._recent(username), self._clock()]

    def succeeded(self, username: str) -> None:
        self._failures.pop(username, None)

    def _recent(self, username: str) -> list[float]:
        cutoff = self._clock() - self.window
        return [t for t in self._failures.get(username, []) if t > cutoff]


def _teacher(row: TeacherRow) -> Teacher:
    return Teacher(row.id, row.username, row.is_admin, row.created_at)


class TeacherStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, username: str, password: str, *, is_admin: bool = False) -> Teacher:
        if not USERNAME.match(username or ""):
            raise InvalidInput("a username is 3-64 letters, digits or . _ @ -")
        if len(password or "") < MIN_PASSWORD:
            raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
        try:
            with self._db.session() as db:
                row = TeacherRow(username=username, password_hash=hash_password(password), is_admin=is_admin)
                db.add(row)
                db.flush()
                return _teacher(row)
        except IntegrityError:
            raise Conflict(f"the username {username!r} is taken") from None

    def verify(self, username: str, password: str) -> Teacher | None:
        with self._db.session() as db:
            row = db.scalar(select(TeacherRow).where(TeacherRow.username == username))
            stored = row.password_hash if row is not None else _DUMMY_HASH
            if check_password(password or "", stored) and row is not None:
                return _teacher(row)
        return None

    def get(self, teacher_id: int) -> Teacher:
        with self._db.session() as db:
            row = db.get(TeacherRow, teacher_id)
            if row is None:
                raise NotFound(f"teacher {teacher_id} does not exist")
            return _teacher(row)

    def find(self, username: str) -> Teacher | None:
        with self._db.session() as db:
            row = db.scalar(select(TeacherRow).where(TeacherRow.username == username))
            return _teacher(row) if row else None

    def list(self) -> list[Teacher]:
        with self._db.session() as db:
            return [_teacher(r) for r in db.scalars(select(TeacherRow).order_by(TeacherRow.id))]

    def delete(self, teacher_id: int) -> None:
        with self._db.session() as db:
            row = db.get(TeacherRow, teacher_id)
            if row is None:
                raise NotFound(f"teacher {teacher_id} does not exist")
            db.delete(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutors.accounts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create-admin", "create-teacher"):
        sub = commands.add_parser(name)
        sub.add_argument("username")
        sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    settings = Settings()
    db = Database(settings.database)
    db.migrate()
    try:
        teacher = TeacherStore(db).create(args.username, password, is_admin=args.command == "create-admin")
    except (InvalidInput, Conflict) as exc:
        print(exc.message, file=sys.stderr)
        return 1
    role = "admin" if teacher.is_admin else "teacher"
    print(f"created {role} {teacher.username!r} (id {teacher.id}) in {settings.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
