"""The reference upstream's settings, built once by the CLI and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; tests build it directly."""

    #: Where the database, the secret and the blobs live (see ``datadir``).
    data_dir: Path
    #: Base of the absolute CDN URLs handed out; None means ``http://HOST:PORT``.
    public_url: str | None = None
    #: Lifetime of a bearer token, in seconds.
    token_ttl: int = 900
    #: Lifetime of an unfinished upload (and of its PUT URL), in seconds.
    upload_ttl: int = 3600
    #: Lifetime of a GET URL of a big part, in seconds.
    url_ttl: int = 3600
    #: Largest JSON request body, in bytes; larger ones get 413.
    max_json_bytes: int = 1024 * 1024
    #: Failed logins for one email within ``login_window`` before 429.
    login_max_failures: int = 5
    #: The window of the login failure count, in seconds.
    login_window: float = 60.0
    #: Seconds a connection may stay silent before the server drops it.
    idle_timeout: float = 120.0
    #: How long a device may use a resource without asking again (its lease), in seconds.
    lease_seconds: int = 7 * 24 * 3600

    def check(self) -> None:
        for name in (
            "token_ttl",
            "upload_ttl",
            "url_ttl",
            "max_json_bytes",
            "login_max_failures",
            "lease_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.login_window <= 0 or self.idle_timeout <= 0:
            raise ValueError("login_window and idle_timeout must be positive")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
