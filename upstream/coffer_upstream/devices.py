"""Devices, enrollment tokens and used login assertions in the database (issue 19).

- An **enrollment token** (``cet_`` + 43 base64url characters) is shown once
  and kept as its sha256 only. Its uses count down in one
  ``UPDATE ... WHERE uses_left > 0`` on a row that is unexpired and not
  revoked: two replicas enrolling at once can never spend a use twice.
- A **device** is its Ed25519 public key (unique) with an id (``d_`` + 26
  base32), a role (the token's) and its times. The same key enrolling again
  (with a valid token, or the one it enrolled with) gets its id back and
  spends no use.
- A login assertion's ``jti`` is inserted under a unique key with its expiry:
  a replay, on any replica, is a duplicate key.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from coffer_upstream.db.models import AssertionJti, EnrollmentToken
from coffer_upstream.db.models import Device as DeviceRow
from coffer_upstream.db.session import Transactions

TOKEN_PREFIX = "cet_"  # noqa: S105 (a prefix, not a token)
_TOKEN = re.compile(r"cet_[A-Za-z0-9_-]{43}")
DEVICE_ID = re.compile(r"d_[a-z2-7]{26}")
#: Seconds between two updates of a device's ``last_seen_at``.
SEEN_EVERY = 60


class NoSuchDevice(Exception):
    pass


class NoSuchToken(Exception):
    pass


class TokenRefused(Exception):
    """Unknown, spent, expired or revoked: one answer, the token is a secret."""


class KeyRevoked(Exception):
    """The public key belongs to a revoked device: it never enrolls again."""


@dataclass(frozen=True)
class Device:
    id: str
    name: str | None
    public_key: bytes
    role: str
    enrolled_at: int
    last_seen_at: int | None
    revoked_at: int | None
    enrolled_with: str | None

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: str
    uses_left: int
    expires_at: int
    created_at: int
    revoked_at: int | None

    def state(self, now: int) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.uses_left <= 0:
            return "spent"
        return "active"


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    role: str
    #: False: this key was enrolled already, and keeps its id.
    created: bool


_DEVICE = (
    DeviceRow.id,
    DeviceRow.name,
    DeviceRow.public_key,
    DeviceRow.role,
    DeviceRow.enrolled_at,
    DeviceRow.last_seen_at,
    DeviceRow.revoked_at,
    DeviceRow.enrolled_with,
)
_TOKEN_INFO = (
    EnrollmentToken.id,
    EnrollmentToken.role,
    EnrollmentToken.uses_left,
    EnrollmentToken.expires_at,
    EnrollmentToken.created_at,
    EnrollmentToken.revoked_at,
)


def new_device_id() -> str:
    return "d_" + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Devices:
    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    # Enrollment tokens

    def create_token(self, role: str, uses: int, expires_at: int, now: int) -> tuple[str, str]:
        """A new token: (its id, the token itself, which is kept only as a digest)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "et_" + secrets.token_hex(6)
        with self._tx.atomic() as db:
            db.execute(
                insert(EnrollmentToken).values(
                    id=token_id,
                    token_sha256=token_digest(token),
                    role=role,
                    uses_left=uses,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
        return token_id, token

    def tokens(self) -> list[TokenInfo]:
        query = select(*_TOKEN_INFO).order_by(EnrollmentToken.created_at, EnrollmentToken.id)
        with self._tx.read() as db:
            return [TokenInfo(*row) for row in db.execute(query)]

    def revoke_token(self, token_id: str, now: int) -> bool:
        """Revoke a token; False if it was revoked already. NoSuchToken if unknown."""
        with self._tx.atomic() as db:
            found = db.execute(
                select(EnrollmentToken.revoked_at).where(EnrollmentToken.id == token_id)
            ).first()
            if found is None:
                raise NoSuchToken(token_id)
            if found.revoked_at is not None:
                return False
            db.execute(
                update(EnrollmentToken).where(EnrollmentToken.id == token_id).values(revoked_at=now)
            )
        return True

    # Enrollment

    def enroll(self, token: str, public_key: bytes, name: str | None, now: int) -> Enrolled:
        """Register ``public_key`` with a use of ``token``, or give back the id it has."""
        for _ in range(3):
            try:
                return self._enroll(token, public_key, name, now)
            except IntegrityError:
                # The same key enrolled at this moment on another replica (the
                # unique key): our transaction, and its use, rolled back.
                continue
        raise TokenRefused()

    def _enroll(self, token: str, public_key: bytes, name: str | None, now: int) -> Enrolled:
        if _TOKEN.fullmatch(token) is None:
            raise TokenRefused()
        digest = token_digest(token)
        usable = (
            EnrollmentToken.token_sha256 == digest,
            EnrollmentToken.uses_left > 0,
            EnrollmentToken.expires_at > now,
            EnrollmentToken.revoked_at.is_(None),
        )
        with self._tx.atomic() as db:
            existing = db.execute(
                select(
                    DeviceRow.id, DeviceRow.role, DeviceRow.revoked_at, DeviceRow.enrolled_with
                ).where(DeviceRow.public_key == public_key)
            ).first()
            if existing is not None:
                # Idempotent, and no use is spent: a token that is still valid,
                # or the very one it enrolled with (spent by that enrollment,
                # whose answer may have been lost), unexpired and not revoked.
                found = db.execute(
                    select(EnrollmentToken.id).where(
                        EnrollmentToken.token_sha256 == digest,
                        EnrollmentToken.expires_at > now,
                        EnrollmentToken.revoked_at.is_(None),
                        (EnrollmentToken.uses_left > 0)
                        | (EnrollmentToken.id == existing.enrolled_with),
                    )
                ).first()
                if found is None:
                    raise TokenRefused()
                if existing.revoked_at is not None:
                    raise KeyRevoked()
                return Enrolled(existing.id, existing.role, created=False)
            # One statement counts a use down, or matches nothing: replica-safe
            # without a lock of our own (the database's row lock orders them).
            spent = db.execute(
                update(EnrollmentToken)
                .where(*usable)
                .values(uses_left=EnrollmentToken.uses_left - 1)
                .returning(EnrollmentToken.id, EnrollmentToken.role)
            ).first()
            if spent is None:
                raise TokenRefused()
            device_id = new_device_id()
            db.execute(
                insert(DeviceRow).values(
                    id=device_id,
                    name=name,
                    public_key=public_key,
                    role=spent.role,
                    enrolled_at=now,
                    enrolled_with=spent.id,
                )
            )
        return Enrolled(device_id, spent.role, created=True)

    # Devices

    def device(self, device_id: str) -> Device | None:
        with self._tx.read() as db:
            row = db.execute(select(*_DEVICE).where(DeviceRow.id == device_id)).first()
        return None if row is None else Device(*row)

    def devices(self) -> list[Device]:
        query = select(*_DEVICE).order_by(DeviceRow.enrolled_at, DeviceRow.id)
        with self._tx.read() as db:
            return [Device(*row) for row in db.execute(query)]

    def revoke(self, device_id: str, now: int) -> bool:
        """Revoke a device; False if it was revoked already. NoSuchDevice if unknown."""
        with self._tx.atomic() as db:
            found = db.execute(
                select(DeviceRow.revoked_at).where(DeviceRow.id == device_id)
            ).first()
            if found is None:
                raise NoSuchDevice(device_id)
            if found.revoked_at is not None:
                return False
            db.execute(update(DeviceRow).where(DeviceRow.id == device_id).values(revoked_at=now))
        return True

    def seen(self, device: Device, now: int) -> None:
        """Note that ``device`` was seen now, at most once a minute (a write is not free)."""
        if device.last_seen_at is not None and now - device.last_seen_at < SEEN_EVERY:
            return
        with self._tx.atomic() as db:
            db.execute(
                update(DeviceRow)
                .where(
                    DeviceRow.id == device.id,
                    (DeviceRow.last_seen_at.is_(None))
                    | (DeviceRow.last_seen_at <= now - SEEN_EVERY),
                )
                .values(last_seen_at=now)
            )

    # Login assertions

    def use_jti(self, device_id: str, jti: str, expires_at: int) -> bool:
        """Record an assertion's ``jti``; False if it was used before (a replay)."""
        try:
            with self._tx.atomic() as db:
                db.execute(
                    insert(AssertionJti).values(device_id=device_id, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True

    def forget_expired_jtis(self, now: int) -> int:
        with self._tx.atomic() as db:
            done = db.execute(delete(AssertionJti).where(AssertionJti.expires_at <= now))
        return done.rowcount
