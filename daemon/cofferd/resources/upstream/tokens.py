"""The login the API client holds, and its access token.

Credentials live in this object's memory only. ``login`` checks them with the
upstream at once; later calls get a token by themselves when there is none or
it has expired (a device signs a fresh assertion; a person's login uses the
refresh token when it has one, else the password). No lock is held across the
network: a renewal is one thread's round trip while the others wait on that
renewal's event (within their deadline), so many threads whose token expired
cause one login, not many, and a slow login blocks no call that has a token.
A failed ``login`` leaves the working credentials and token in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests

from cofferd.errors import Unauthorized, UpstreamError
from cofferd.resources import wire
from cofferd.resources.translate import json_body, raise_for_status
from cofferd.resources.upstream.credentials import (
    JWT_BEARER,
    Credentials,
    DeviceCredential,
    subject_of,
)
from cofferd.resources.upstream.transport import Transport

log = logging.getLogger(__name__)


class Tokens:
    """The credentials in use and the token they got, for one upstream's transport."""

    def __init__(
        self,
        transport: Transport,
        *,
        credential_source: Callable[[], Credentials | None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._http = transport
        self._wall = wall
        self._lock = threading.Lock()  # guards the fields below; never held across I/O
        self._credentials: Credentials | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        #: Set while one thread renews the token; the others wait on it.
        self._renewing: _Renewal | None = None
        self._credential_source = credential_source
        #: The boot credential's pair while it is in use but not yet accepted.
        self._adopted: Credentials | None = None
        #: A refresh token (the upstream's extension) and the credentials it came with:
        #: renewals use it instead of the password, which costs the upstream a hash.
        self._refresh: tuple[Credentials, str] | None = None

    @property
    def authenticated(self) -> bool:
        """Whether credentials the upstream accepted are set."""
        with self._lock:
            return self._credentials is not None and self._adopted is None

    @property
    def subject(self) -> str | None:
        """Whom the login in use speaks for (the email, or ``device:<id>``); None: no login.

        The boot credential or the device's key is taken first if none is held,
        so this is the identity the next call would use, accepted yet or not.
        """
        self.adopt()
        with self._lock:
            return None if self._credentials is None else subject_of(self._credentials)

    def login(self, email: str, password: str) -> None:
        """Check ``email``/``password`` with the upstream and keep them for later calls.

        Refused credentials raise :class:`Unauthorized` and leave the ones set
        before in place.
        """
        token, expires, refresh = self._fetch_token(email, password, self._http.deadline())
        with self._lock:
            # Set together: a renewal under the old credentials still in flight
            # finds them changed and discards its token.
            self._credentials = credentials = (email, password)
            self._adopted = None
            self._token, self._token_expires = token, expires
            self._refresh = None if refresh is None else (credentials, refresh)
        log.info("logged in to the upstream")

    def logout(self) -> None:
        """Forget the credentials and the token; later calls need a login again."""
        with self._lock:
            self._credentials = None
            self._adopted = None
            self._token = None
            self._token_expires = 0.0
            self._refresh = None

    def adopt(self) -> None:
        """With no credentials held, take the boot credential's; the login checks them."""
        if self._credential_source is None:
            return
        with self._lock:
            if self._credentials is not None:
                return
        found = self._credential_source()  # a local file, read outside the lock
        if found is None:
            return
        with self._lock:
            if self._credentials is None:
                self._credentials = self._adopted = found
                self._token = None

    def _renew(self, credentials: Credentials, deadline: float) -> tuple[str, float, str | None]:
        """A new token: a device signs an assertion; a person's login uses the
        refresh token if there is one, else (or if it is refused) the password.
        Network only: the caller holds no lock."""
        if isinstance(credentials, DeviceCredential):
            return self._device_token(credentials, deadline)
        with self._lock:
            held = self._refresh
        if held is not None and held[0] is credentials:
            body = {"refresh_token": held[1]}
            resp = self._http.send("POST", "/v1/token", json=body, deadline=deadline, login=True)
            if resp.status_code == 200:
                token = wire.parse_token(json_body(resp, "token renewal"))
                return token.access_token, self._expiry(token.expires_in), held[1]
            # Refused (revoked, expired) or not offered: the password decides.
        return self._fetch_token(*credentials, deadline)

    def _device_token(self, device: DeviceCredential, deadline: float) -> tuple[str, float, None]:
        """An access token for the device's proof of key (RFC 7523)."""
        body = {
            "grant_type": JWT_BEARER,
            "assertion": device.assertion(self._http.base + "/v1/token", self._wall()),
        }
        resp = self._http.send("POST", "/v1/token", json=body, deadline=deadline, login=True)
        if resp.status_code == 401:
            raise Unauthorized(f"the upstream refused the device's login: {refusal_detail(resp)}")
        raise_for_status(resp, "device login")
        token = wire.parse_token(json_body(resp, "device login"))
        return token.access_token, self._expiry(token.expires_in), None

    def _expiry(self, expires_in: float) -> float:
        # Renew a little early so a token does not expire in flight.
        return self._http.clock() + expires_in - min(30.0, expires_in / 10)

    def _fetch_token(
        self, email: str, password: str, deadline: float
    ) -> tuple[str, float, str | None]:
        # A person's login (email and password). Network only: the caller holds no lock.
        body = {"email": email, "password": password}
        resp = self._http.send("POST", "/v1/login", json=body, deadline=deadline, login=True)
        if resp.status_code == 401:
            raise Unauthorized("the upstream refused the email or password")
        if resp.status_code == 429:
            wait = resp.headers.get("Retry-After", "")
            after = f"; retry after {wait} s" if wait.isdigit() else ""
            raise Unauthorized(f"too many failed logins{after}")
        raise_for_status(resp, "login")
        answer = json_body(resp, "login")
        token = wire.parse_token(answer)
        refresh = answer.get("refresh_token") if isinstance(answer, dict) else None
        refresh = refresh if isinstance(refresh, str) and 0 < len(refresh) <= 256 else None
        return token.access_token, self._expiry(token.expires_in), refresh

    def current(self, deadline: float) -> str:
        self.adopt()
        while True:
            with self._lock:
                credentials = self._credentials
                if credentials is None:
                    raise Unauthorized("log in first")
                if self._token is not None and self._http.clock() < self._token_expires:
                    return self._token
                renewal = self._renewing
                renewer = renewal is None
                if renewal is None:
                    renewal = self._renewing = _Renewal()
            if not renewer:
                if not renewal.done.wait(self._http.left(deadline, "a login")):
                    continue  # the deadline check above raises
                if renewal.error is not None:
                    # One login attempt for all who waited on it: the upstream's
                    # refusal is theirs too, not a reason for one more attempt each.
                    raise type(renewal.error)(str(renewal.error))
                continue
            try:
                token, expires, refresh = self._renew(credentials, deadline)
                with self._lock:
                    if self._credentials is credentials:  # not replaced by a login meanwhile
                        self._token, self._token_expires = token, expires
                        self._refresh = None if refresh is None else (credentials, refresh)
                        if self._adopted is credentials:
                            self._adopted = None
                            log.info("logged in to the upstream with the boot credential")
            except (Unauthorized, UpstreamError) as exc:
                renewal.error = exc
                if isinstance(exc, Unauthorized):
                    with self._lock:
                        if self._credentials is not credentials:
                            pass  # replaced by a login meanwhile
                        elif self._adopted is credentials:  # a refused boot credential goes
                            self._credentials = self._adopted = None
                        elif isinstance(credentials, DeviceCredential):
                            # The device's key stays (it is the device), but a revoked
                            # device is not authenticated: until the upstream takes it
                            # again it counts as adopted, not accepted.
                            self._adopted = credentials
                raise
            finally:
                with self._lock:
                    self._renewing = None
                renewal.done.set()

    def drop(self, token: str) -> None:
        with self._lock:
            if self._token == token:  # another thread may have renewed it already
                self._token = None


def refusal_detail(resp: requests.Response) -> str:
    """The upstream's one-line reason for a 401 (it names a rule, never a secret)."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str) or not detail.isprintable():
        return "HTTP 401"
    return detail[:200]


class _Renewal:
    """One token renewal in flight: the others wait on ``done``, then read ``error``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Unauthorized | UpstreamError | None = None
