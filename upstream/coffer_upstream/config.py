"""The reference upstream's settings, built once by the CLI and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; tests build it directly."""

    #: Where the keys live, the local store's blobs and the default SQLite database.
    data_dir: Path
    #: SQLAlchemy URL of the database; None: SQLite in the data dir.
    database_url: str | None = None
    #: Where the big parts live: "local" (the data dir, served by /cdn) or "s3".
    store: str = "local"
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    #: The part size offered for multipart uploads to S3 (the multipart
    #: extension); S3 takes 5 MiB to 5 GiB. 64 MiB parts reach 625 GiB.
    s3_part_size: int = 64 * 1024 * 1024
    #: Base of the absolute CDN URLs handed out; None means ``http://HOST:PORT``.
    public_url: str | None = None
    #: Lifetime of a bearer token, in seconds.
    token_ttl: int = 900
    #: Lifetime of a refresh token (extension), in seconds.
    refresh_ttl: int = 30 * 24 * 3600
    #: Lifetime of an unfinished upload (and of its PUT URL), in seconds.
    upload_ttl: int = 3600
    #: Lifetime of a GET URL of a big part, in seconds.
    url_ttl: int = 3600
    #: Largest JSON request body, in bytes; larger ones get 413.
    max_json_bytes: int = 1024 * 1024
    #: Largest commit body: it may carry a segment manifest (32 bytes per MiB
    #: of big part, in base64), so 4 MiB covers some 90 GiB in 1 MiB segments.
    max_commit_bytes: int = 4 * 1024 * 1024
    #: Largest body of a delegated role's metadata (``PUT /v1/tuf/roles/{role}``).
    max_metadata_bytes: int = 4 * 1024 * 1024
    #: Lifetimes of the snapshot and timestamp the online key signs, in seconds.
    snapshot_expiry: int = 7 * 86400
    timestamp_expiry: int = 86400
    #: Password checks at once (scrypt, some 40 ms and 16 MiB each), and how many may wait.
    password_workers: int = 2
    password_queue: int = 64
    #: Failed logins from one source within ``login_window`` before 429.
    login_max_failures: int = 5
    #: The window of the login failure count, in seconds.
    login_window: float = 60.0
    #: Seconds a connection may stay silent before the server drops it.
    idle_timeout: float = 120.0
    #: How long a device may use a resource without asking again (its lease), in seconds.
    lease_seconds: int = 7 * 24 * 3600
    #: More ``aud`` values a device's login assertion may name, beside
    #: ``public_url`` + ``/v1/token`` (e.g. the URL behind a proxy that rewrites it).
    audiences: tuple[str, ...] = ()

    def token_audiences(self) -> tuple[str, ...]:
        """The ``aud`` values a device's login assertion may name."""
        own = () if self.public_url is None else (self.public_url.rstrip("/") + "/v1/token",)
        return own + tuple(self.audiences)

    def check(self) -> None:
        for name in (
            "token_ttl",
            "refresh_ttl",
            "upload_ttl",
            "password_workers",
            "url_ttl",
            "max_json_bytes",
            "max_commit_bytes",
            "max_metadata_bytes",
            "snapshot_expiry",
            "timestamp_expiry",
            "login_max_failures",
            "lease_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.login_window <= 0 or self.idle_timeout <= 0:
            raise ValueError("login_window and idle_timeout must be positive")
        if self.store not in ("local", "s3"):
            raise ValueError("store must be local or s3")
        if self.store == "s3" and not self.s3_bucket:
            raise ValueError("--store s3 needs --s3-bucket")
        if not 5 * 1024 * 1024 <= self.s3_part_size <= 5 * 1024**3:
            raise ValueError("s3_part_size must be from 5 MiB to 5 GiB")
        if self.password_queue < 0:
            raise ValueError("password_queue must not be negative")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
