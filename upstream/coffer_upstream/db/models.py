"""The tables, as SQLAlchemy 2 declarative models. Alembic's migrations make them.

Emails match case-insensitively: ``email_key`` is the case-folded email, unique,
and what lookups use (SQLite's NOCASE collation of the first schema only
folded ASCII, and PostgreSQL has none).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class User(Base):
    __tablename__ = "users"
    email: Mapped[str] = mapped_column(Text, primary_key=True)
    email_key: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    #: A disabled user's tokens (access and refresh) stop working at once.
    disabled: Mapped[bool] = mapped_column(default=False)
    #: Raised by a password change or a disable: tokens issued under an older
    #: epoch are refused.
    token_epoch: Mapped[int] = mapped_column(Integer, default=0)


class Version(Base):
    __tablename__ = "versions"
    folder: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    small: Mapped[bytes] = mapped_column(LargeBinary)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    blob_id: Mapped[str] = mapped_column(Text, unique=True)
    big_size: Mapped[int] = mapped_column(BigInteger)
    big_sha256: Mapped[str] = mapped_column(Text)
    plaintext_size: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int | None] = mapped_column(BigInteger)
    #: The segment manifest (docs/trust.md): the raw SHA-256 of each chunk of
    #: ``segment_size`` bytes of the big part, concatenated; NULL if not given.
    segment_size: Mapped[int | None] = mapped_column(BigInteger)
    segments: Mapped[bytes | None] = mapped_column(LargeBinary)


class Retired(Base):
    """The last version number of a retired resource: numbers are never given out again."""

    __tablename__ = "retired"
    folder: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class Upload(Base):
    __tablename__ = "uploads"
    upload_id: Mapped[str] = mapped_column(Text, primary_key=True)
    folder: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    blob_id: Mapped[str] = mapped_column(Text, unique=True)
    created_by: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    put_size: Mapped[int | None] = mapped_column(BigInteger)
    put_sha256: Mapped[str | None] = mapped_column(Text)
    put_fingerprint: Mapped[str | None] = mapped_column(Text)
    committed_version: Mapped[int | None] = mapped_column(Integer)
    #: The store's multipart upload id, when the upload is multipart.
    multipart_id: Mapped[str | None] = mapped_column(Text)


class ArchiveKey(Base):
    __tablename__ = "archive_keys"
    archive_id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(Text)


class LoginFailure(Base):
    """Recent failed logins, by source address: shared by every replica."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[int] = mapped_column(BigInteger)


class RefreshToken(Base):
    """A refresh token's digest (never the token): renewing costs no password hash."""

    __tablename__ = "refresh_tokens"
    token_sha256: Mapped[str] = mapped_column(Text, primary_key=True)
    email: Mapped[str] = mapped_column(Text, index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Lock(Base):
    """A named lock with an expiry (the janitor's): works on SQLite and PostgreSQL."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """An enrolled device: its Ed25519 public key is its identity (issue 19)."""

    __tablename__ = "devices"
    #: ``d_`` + 26 base32 characters: not secret, the ``kid`` of its assertions.
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    #: The raw 32-byte Ed25519 public key.
    public_key: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    role: Mapped[str] = mapped_column(Text)
    enrolled_at: Mapped[int] = mapped_column(BigInteger)
    #: Updated at most once a minute by its authorized calls.
    last_seen_at: Mapped[int | None] = mapped_column(BigInteger)
    #: Set by ``device revoke``: its logins and its tokens are refused at once.
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    #: The id of the enrollment token it enrolled with.
    enrolled_with: Mapped[str | None] = mapped_column(Text)


class EnrollmentToken(Base):
    """An enrollment token's digest (never the token), its role and its uses left."""

    __tablename__ = "enrollment_tokens"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    uses_left: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class AssertionJti(Base):
    """The ``jti`` of each login assertion accepted, kept until it could no longer
    pass (its ``exp`` plus the clock skew allowed): a replay is a duplicate key."""

    __tablename__ = "assertion_jtis"
    device_id: Mapped[str] = mapped_column(Text, primary_key=True)
    jti: Mapped[str] = mapped_column(Text, primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class TufMetadata(Base):
    """A TUF metadata file as served, byte for byte: one row per (role, version)
    (issue 20). ``expires`` is its ``signed.expires`` in Unix seconds."""

    __tablename__ = "tuf_metadata"
    role: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[int] = mapped_column(BigInteger)
