"""cofferd's settings: built once in ``main()`` and passed down, never read at import.

Sources, later ones winning: the defaults below ← a TOML config file
(``/etc/coffer/cofferd.toml`` by default, table-less keys as named in
:class:`Settings`) ← ``COFFER_*`` environment variables (and ``DOCKER_HOST``).
Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cofferd.errors import SettingsError

DEFAULT_CONFIG_FILE = Path("/etc/coffer/cofferd.toml")
DEFAULT_SOCKET = Path("/run/coffer/cofferd.sock")


@dataclass(frozen=True)
class Settings:
    """Everything cofferd needs to know about its environment."""

    #: Where cofferd binds its socket when systemd does not pass one.
    socket_path: Path = DEFAULT_SOCKET
    #: Base URL of the upstream resource API (protocol v1).
    upstream_url: str = "http://127.0.0.1:8080"
    #: The model cache dir: verified big parts, by folder/name/version.
    cache_dir: Path = Path("/var/cache/coffer")
    #: Persistent state (e.g. what the last unlock loaded).
    state_dir: Path = Path("/var/lib/coffer")
    #: The encrypted Docker image archive shipped with the device.
    archive_path: Path = Path("/var/lib/coffer/images.coffer")
    #: The Docker engine; None means the docker SDK's default (DOCKER_HOST or the local socket).
    docker_host: str | None = None
    #: Seconds for one upstream HTTP exchange to connect / go silent.
    upstream_timeout: float = 30.0
    #: Largest payload returned or accepted inline as base64, in bytes.
    inline_max_bytes: int = 4 * 1024 * 1024
    #: Seconds that in-flight calls get to finish after SIGTERM.
    shutdown_grace: float = 10.0
    #: Seconds the Docker client waits for the engine during an image load.
    docker_timeout: float = 3600.0
    #: Python logging level name.
    log_level: str = "INFO"

    # -- unattended in the field (boot login, offline leases: cofferd.field) --
    #: Ed25519 public keys (standard base64 of 32 bytes) whose leases are
    #: trusted; empty: no offline use. From the environment: comma-separated.
    lease_public_keys: tuple[str, ...] = ()
    #: Seconds the wall clock may be behind the trusted time before offline use is refused.
    max_clock_skew: float = 300.0
    #: Name of the systemd credential holding the upstream login (JSON email/password).
    login_credential: str = "coffer-login"
    #: Name of the systemd credential holding the device key that seals offline records.
    device_key_credential: str = "coffer-device-key"
    #: Where credentials are read; None: ``$CREDENTIALS_DIRECTORY`` (set by systemd).
    credentials_dir: Path | None = None
    #: Seconds added to the system clock for lease checks (tests; same as moving
    #: the clock, so the trusted-time defences apply to it alike).
    clock_offset: float = 0.0

    # -- memfd delivery (load_memfd, coffer exec) --
    #: Largest plaintext one load_memfd call may pin in memory, in bytes. The
    #: pages are charged to cofferd's service (its MemoryMax=) while any caller
    #: holds the fd.
    memfd_max_bytes: int = 8 * 1024 * 1024 * 1024

    # -- the managed cache (issue 11) ------------------------------------------
    #: Most bytes the cache may hold; 0: no cap of its own, only the free-space floor.
    cache_max_bytes: int = 0
    #: Least free space to leave on the cache's file system, in bytes.
    cache_min_free_bytes: int = 1 << 30

    # -- metrics (self-description and observability) --
    #: Directory for node_exporter's textfile collector: cofferd writes
    #: ``cofferd.prom`` there every ``metrics_interval`` seconds. None (empty): off.
    metrics_textfile_dir: Path | None = None
    #: Seconds between two writes of the metrics textfile.
    metrics_interval: float = 15.0

    # -- trust: publisher-signed releases (docs/trust.md) -------------------------
    #: ``required``: deliver only releases a publisher signed, under the root
    #: pinned in ``<state_dir>/trust/``; ``off``: deliver what the upstream serves.
    trust: str = "required"
    #: Seconds between two refreshes of the trust metadata (0: at every load).
    trust_refresh_interval: float = 60.0

    # -- caller isolation (docs/reliability.md) ---------------------------------
    #: Seconds a connection may stay open without sending a complete request.
    idle_timeout: float = 60.0
    #: Seconds a started request line may take to arrive whole (shorter: a
    #: half-sent line is the cheap way to hold a slot).
    partial_line_timeout: float = 10.0
    #: Connections served at once, all callers together.
    max_connections: int = 128
    #: Connections one uid may hold at once (root's too: it is a caller like any);
    #: half of max_connections, so no one uid can take every slot.
    max_connections_per_uid: int = 64
    #: Largest upload through an fd, in bytes (the plaintext read from the caller).
    max_upload_bytes: int = 64 * 1024**3
    #: Uids that may call ``login`` (it changes the identity every caller uses);
    #: None: root and the uid cofferd runs as.
    login_uids: tuple[int, ...] | None = None

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Defaults ← ``config_file`` (or the default one, if present) ← ``environ``.

        A config file named explicitly must exist; the default one may not.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = config_file
        if path is None and env.get("COFFER_CONFIG"):
            path = Path(env["COFFER_CONFIG"])
        if path is not None or DEFAULT_CONFIG_FILE.exists():
            values.update(_read_toml(path or DEFAULT_CONFIG_FILE))
        for f in dataclasses.fields(cls):
            name = "DOCKER_HOST" if f.name == "docker_host" else f"COFFER_{f.name.upper()}"
            if name in env:
                values[f.name] = env[name]
        # COFFER_SOCKET and COFFER_CACHE_DIR are the documented short names.
        if "COFFER_SOCKET" in env:
            values["socket_path"] = env["COFFER_SOCKET"]
        # systemd's own variable, unless the operator named a directory.
        if env.get("CREDENTIALS_DIRECTORY") and "COFFER_CREDENTIALS_DIR" not in env:
            values.setdefault("credentials_dir", env["CREDENTIALS_DIRECTORY"])
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build from plain values (strings from the environment, TOML types), checked."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise SettingsError(f"unknown setting {key!r}")
            kwargs[key] = _coerce(key, known[key].type, raw)
        settings = cls(**kwargs)
        settings.check()
        return settings

    def allowed_login_uids(self) -> frozenset[int]:
        """Who may call ``login``: the setting, or root and cofferd's own uid."""
        if self.login_uids is None:
            return frozenset((0, os.getuid()))
        return frozenset(self.login_uids)

    def check(self) -> None:
        if not self.upstream_url.startswith(("http://", "https://")):
            raise SettingsError("upstream_url must start with http:// or https://")
        for name in ("upstream_timeout", "shutdown_grace", "docker_timeout", "metrics_interval"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for name in (
            "inline_max_bytes",
            "cache_max_bytes",
            "cache_min_free_bytes",
            "memfd_max_bytes",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative")
        if self.trust not in ("required", "off"):
            raise SettingsError('trust must be "required" or "off"')
        if self.trust_refresh_interval < 0:
            raise SettingsError("trust_refresh_interval must not be negative")
        if self.max_clock_skew < 0:
            raise SettingsError("max_clock_skew must not be negative")
        for key in self.lease_public_keys:
            if len(key) != 44 or not key.endswith("="):
                raise SettingsError(
                    f"lease_public_keys: {key[:12]!r}... is not the base64 of a 32-byte key"
                )
        for name in ("idle_timeout", "partial_line_timeout"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for name in ("max_connections", "max_connections_per_uid", "max_upload_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from exc


def _text(item: object) -> str:
    if not isinstance(item, str):
        raise TypeError(item)
    return item


def _coerce(key: str, annotation: object, raw: Any) -> Any:
    kind = str(annotation)
    try:
        if kind == "Path":
            return Path(str(raw))
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "Path | None":
            return None if raw in ("", None) else Path(str(raw))
        if kind == "tuple[int, ...] | None":
            return _uids(raw)
        if kind == "str | None":
            return None if raw in ("", None) else str(raw)
        if kind == "Path | None":
            return None if raw in ("", None) else Path(str(raw))
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(i.strip() for i in map(_text, items) if i.strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {key!r}: {raw!r} is not a valid {kind}") from exc


def _uids(raw: Any) -> tuple[int, ...] | None:
    # TOML gives a list; the environment a comma-separated string.
    if raw is None or raw == "":  # unset: root and cofferd's own uid
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    uids = tuple(int(str(i).strip()) for i in items if str(i).strip())
    if any(u < 0 for u in uids):
        raise ValueError("a uid is not negative")
    return uids


__all__ = ["DEFAULT_CONFIG_FILE", "DEFAULT_SOCKET", "Settings"]
