"""The boot login: the upstream credential from systemd, read when needed, never kept on disk.

Who the daemon is logged in as, and where that came from: the login
credential (``$CREDENTIALS_DIRECTORY/<login_credential>``), asked whenever a
call needs a login and none is held, and once at start on a background
thread that retries with bounded, jittered exponential backoff (1 s doubling
to 60 s) while the upstream is unreachable. A ``login`` call wins until
restart: its credentials are held, so the file is not asked again; after
``logout`` neither is used until restart.

An enrolled device (:mod:`cofferd.field.enrollment`) logs in by proof of key
instead: its credential is the device's, and the login credential file is
never read (no password is needed on it). A person's ``login`` still wins
until ``logout``; after it the device's own identity is used again.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path

from cofferd.errors import Unauthorized, UpstreamError
from cofferd.field.credentials import CredentialError, read_login
from cofferd.resources.upstream import ApiClient, Credentials, DeviceCredential

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class BootLogin:
    def __init__(
        self,
        directory: Path | None,
        name: str,
        device: Callable[[], DeviceCredential | None] = lambda: None,
    ) -> None:
        self._directory = directory
        self._device = device
        self._name = name
        self._lock = threading.Lock()
        self.source = "none"  # "device" | "credential" | "login call" | "none"
        self._logged_out = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def credential(self) -> Credentials | None:
        """The API client's credential source: the device's key, the file's login, or None."""
        device = self._device()
        if device is not None:
            with self._lock:
                self.source = "device"
            return device
        with self._lock:
            if self._logged_out:
                return None
        try:
            found = read_login(self._directory, self._name)
        except CredentialError as exc:
            log.error("%s", exc)  # noqa: TRY400 (the message never quotes the file)
            return None
        if found is None:
            return None
        with self._lock:
            self.source = "credential"
        return found.email, found.password

    def login_called(self) -> None:
        with self._lock:
            self.source = "login call"
            self._logged_out = False

    def logged_out(self) -> None:
        with self._lock:
            self.source = "none"
            self._logged_out = True

    def start(self, client: Callable[[], ApiClient]) -> None:
        """Log in from the credential now, on a thread, retrying while unreachable."""
        if self._directory is None or not (self._directory / self._name).exists():
            return
        self._thread = threading.Thread(
            target=self._run, args=(client,), name="boot-login", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, client: Callable[[], ApiClient]) -> None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            api = client()
            if api.authenticated:
                return  # a login call (or a load) got there first
            if self._device() is not None:
                return  # enrolled: the device logs in by proof of key when a call needs it
            found = self.credential()
            if not isinstance(found, tuple):
                return
            try:
                api.login(*found)
            except Unauthorized as exc:
                log.error("the upstream refused the login credential: %s", exc)  # noqa: TRY400
                return
            except UpstreamError as exc:
                wait = delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)
                log.warning("boot login failed (%s); trying again in %.1f s", exc, wait)
                self._stop.wait(wait)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            with self._lock:
                self.source = "credential"
            log.info("logged in to the upstream with the boot credential")
            return
