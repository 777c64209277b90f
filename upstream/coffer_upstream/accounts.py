"""Users, refresh tokens and failed logins in the database, shared by every replica.

Emails match case-insensitively through ``email_key`` (the case-folded email).
Disabling a user or changing its password raises its ``token_epoch``: tokens
issued under an older epoch stop working at once, on every replica.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from coffer_upstream.db.models import LoginFailure, RefreshToken
from coffer_upstream.db.models import User as UserRow
from coffer_upstream.db.session import Transactions

ROLES = ("reader", "publisher")


class UserExists(Exception):
    pass


class NoSuchUser(Exception):
    pass


@dataclass(frozen=True)
class User:
    email: str
    role: str
    password_hash: str
    disabled: bool
    token_epoch: int


_USER = (
    UserRow.email,
    UserRow.role,
    UserRow.password_hash,
    UserRow.disabled,
    UserRow.token_epoch,
)


class Accounts:
    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    # Users

    def add_user(self, email: str, role: str, password_hash: str) -> None:
        try:
            with self._tx.atomic() as db:
                db.execute(
                    insert(UserRow).values(
                        email=email,
                        email_key=email.casefold(),
                        role=role,
                        password_hash=password_hash,
                        disabled=False,
                        token_epoch=0,
                    )
                )
        except IntegrityError as exc:
            raise UserExists(email) from exc

    def user(self, email: str) -> User | None:
        with self._tx.read() as db:
            row = db.execute(select(*_USER).where(UserRow.email_key == email.casefold())).first()
        return None if row is None else User(*row)

    def users(self) -> list[User]:
        with self._tx.read() as db:
            return [User(*row) for row in db.execute(select(*_USER).order_by(UserRow.email_key))]

    def set_disabled(self, email: str, disabled: bool) -> None:
        self._change(email, disabled=disabled, token_epoch=UserRow.token_epoch + 1)

    def set_password(self, email: str, password_hash: str) -> None:
        self._change(email, password_hash=password_hash, token_epoch=UserRow.token_epoch + 1)

    def set_role(self, email: str, role: str) -> None:
        self._change(email, role=role)

    def _change(self, email: str, **values: object) -> None:
        with self._tx.atomic() as db:
            key = email.casefold()
            done = db.execute(update(UserRow).where(UserRow.email_key == key).values(**values))
            if done.rowcount != 1:
                raise NoSuchUser(email)
            if "token_epoch" in values:
                # The user's refresh tokens go too: a new login is needed.
                db.execute(delete(RefreshToken).where(RefreshToken.email == key))

    # Refresh tokens (only their digests are kept)

    def add_refresh_token(self, token: str, email: str, expires_at: int) -> None:
        with self._tx.atomic() as db:
            db.execute(
                insert(RefreshToken).values(
                    token_sha256=_digest(token), email=email.casefold(), expires_at=expires_at
                )
            )

    def refresh_token_user(self, token: str, now: int) -> str | None:
        """The email a refresh token was issued to, if it is known and unexpired."""
        query = select(RefreshToken.email).where(
            RefreshToken.token_sha256 == _digest(token), RefreshToken.expires_at > now
        )
        with self._tx.read() as db:
            email: str | None = db.execute(query).scalar()
        return email

    def forget_expired_refresh_tokens(self, now: int) -> int:
        with self._tx.atomic() as db:
            done = db.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now))
        return done.rowcount

    # Failed logins, by source address

    def add_login_failure(self, source: str, now: int) -> None:
        with self._tx.atomic() as db:
            db.execute(insert(LoginFailure).values(source=source[:64], at=now))

    def login_failures(self, source: str, since: int) -> tuple[int, int | None]:
        """How many failures ``source`` had since ``since``, and when the oldest was."""
        query = select(func.count(), func.min(LoginFailure.at)).where(
            LoginFailure.source == source[:64], LoginFailure.at > since
        )
        with self._tx.read() as db:
            count, oldest = db.execute(query).one()
        return int(count), oldest

    def clear_login_failures(self, source: str) -> None:
        with self._tx.atomic() as db:
            db.execute(delete(LoginFailure).where(LoginFailure.source == source[:64]))

    def forget_login_failures(self, before: int) -> None:
        with self._tx.atomic() as db:
            db.execute(delete(LoginFailure).where(LoginFailure.at <= before))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
