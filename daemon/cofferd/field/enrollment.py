"""Enrollment: the device's key registered with the upstream, and the id it got.

A device enrolls once with an enrollment token (``coffer-upstream enroll-token
create``): by the ``enroll`` call (``coffer enroll``), or unattended at start
from the systemd credential ``coffer-enroll-token`` when it is not enrolled
yet, on a background thread that retries with the boot login's backoff while
the upstream is unreachable. The token is never logged, kept or quoted.

The device id the upstream answers is kept in the state dir as
``identity.json`` (``{"device_id", "public_key", "upstream"}``, not secret,
written atomically). It is bound to the identity credential's public key and
to the upstream URL: a file about another key (a state dir copied from another
device, or a key replaced at first boot) or another upstream is ignored, and
the device is not enrolled.

Once enrolled, :meth:`Enrollment.credential` is the API client's login when
no person's ``login`` is in use: it signs its own assertions, no password.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coffer.atomic import atomic_file
from cofferd.errors import BadRequest, StateUnwritable, Unauthorized, UpstreamError
from cofferd.field.credentials import MAX_CREDENTIAL_BYTES, CredentialError, read_raw
from cofferd.field.identity import IdentityState
from cofferd.field.login import BACKOFF_FIRST, BACKOFF_MAX
from cofferd.resources.upstream import DEVICE_ID, ApiClient, DeviceCredential

log = logging.getLogger(__name__)

#: The enrollment token an image carries (text; surrounding whitespace ignored).
TOKEN_CREDENTIAL = "coffer-enroll-token"  # noqa: S105 (a name, not a token)
#: The device id's file in the state dir.
STATE_FILE = "identity.json"
#: A token longer than this is not one (``cet_`` + 43 characters today).
MAX_TOKEN = 512


def check_token(token: str) -> str:
    """The token, stripped, if it could be one; BadRequest (never quoting it) otherwise."""
    token = token.strip()
    if not token or len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable():
        raise BadRequest(f"an enrollment token is 1 to {MAX_TOKEN} printable ASCII characters")
    return token


class Enrollment:
    """Whether this device is enrolled, as which device id; enrolling it."""

    def __init__(
        self,
        state_dir: Path,
        identity: IdentityState,
        upstream_url: str,
        credentials_dir: Path | None,
    ) -> None:
        self._path = state_dir / STATE_FILE
        self._identity = identity
        self._upstream = upstream_url.rstrip("/")
        self._credentials_dir = credentials_dir
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._device: DeviceCredential | None = self._read()
        self.role: str | None = None

    def _read(self) -> DeviceCredential | None:
        ident = self._identity.identity
        if ident is None:
            return None
        try:
            with self._path.open("rb") as f:
                state = json.loads(f.read(MAX_CREDENTIAL_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("%s: unreadable; the device is not enrolled", self._path)
            return None
        if not isinstance(state, dict):
            return None
        if state.get("public_key") != ident.public_key:
            log.warning(
                "%s is about another key (a copy from another device, or a key made anew):"
                " ignored; the device must enroll",
                self._path,
            )
            return None
        if state.get("upstream") != self._upstream:
            log.warning("%s is about another upstream: ignored; the device must enroll", self._path)
            return None
        device_id = state.get("device_id")
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            log.warning("%s: no valid device id; the device is not enrolled", self._path)
            return None
        log.info("enrolled as device %s", device_id)
        return DeviceCredential(device_id, ident.private_key)

    @property
    def device_id(self) -> str | None:
        with self._lock:
            return None if self._device is None else self._device.device_id

    def credential(self) -> DeviceCredential | None:
        """The device's credential for the API client (one object per enrollment)."""
        with self._lock:
            return self._device

    def status(self) -> dict[str, Any] | None:
        """The ``identity`` member of ``status``."""
        found = self._identity.status(enrolled=self.device_id is not None)
        if found is not None:
            found["device_id"] = self.device_id
        return found

    def enroll(self, client: ApiClient, token: str) -> tuple[str, str]:
        """Enroll with ``token``: (device id, role). Unauthorized if the upstream refuses it."""
        ident = self._identity.identity
        if ident is None:
            raise BadRequest("this device has no identity key (credential coffer-device-identity)")
        device_id, role = client.enroll(check_token(token), ident.public_key)
        state = {"device_id": device_id, "public_key": ident.public_key, "upstream": self._upstream}
        try:
            with atomic_file(self._path) as f:
                f.write(json.dumps(state).encode() + b"\n")
        except OSError as exc:
            # Enrolled upstream; enrolling again with a valid token gives the same id.
            raise StateUnwritable(
                f"enrolled as device {device_id}, but cannot keep it in {self._path}:"
                f" {exc.strerror}"
            ) from None
        with self._lock:
            if self._device is None or self._device.device_id != device_id:
                self._device = DeviceCredential(device_id, ident.private_key)
            self.role = role
        return device_id, role

    # -- unattended, at start ---------------------------------------------------

    def start(self, client: Callable[[], ApiClient], enrolled: Callable[[], None]) -> None:
        """Enroll from the credential now, on a thread, if not enrolled yet and one is there."""
        if self.device_id is not None or self._identity.identity is None:
            return
        if self._credentials_dir is None or not (self._credentials_dir / TOKEN_CREDENTIAL).exists():
            return
        self._thread = threading.Thread(
            target=self._run, args=(client, enrolled), name="enroll", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _token(self) -> str | None:
        try:
            data = read_raw(self._credentials_dir, TOKEN_CREDENTIAL)
            return None if data is None else check_token(data.decode("ascii"))
        except (CredentialError, UnicodeDecodeError, BadRequest):
            log.error("credential %s: not an enrollment token", TOKEN_CREDENTIAL)  # noqa: TRY400
            return None

    def _run(self, client: Callable[[], ApiClient], enrolled: Callable[[], None]) -> None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            if self.device_id is not None:
                return  # an enroll call got there first
            token = self._token()
            if token is None:
                return
            try:
                device_id, _ = self.enroll(client(), token)
            except (Unauthorized, BadRequest) as exc:
                log.error("enrollment from credential %s failed: %s", TOKEN_CREDENTIAL, exc)  # noqa: TRY400
                return
            except UpstreamError as exc:
                wait = delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)
                log.warning("enrollment failed (%s); trying again in %.1f s", exc, wait)
                self._stop.wait(wait)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            except StateUnwritable as exc:
                log.error("%s", exc)  # noqa: TRY400 (no traceback: the message says it)
                return
            log.info("enrolled from credential %s as device %s", TOKEN_CREDENTIAL, device_id)
            enrolled()
            return
