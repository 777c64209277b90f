"""The API client: cofferd's side of upstream protocol v1 (docs/upstream-protocol.md).

Contracts:

- Credentials live in this object's memory only. ``login`` checks them with
  the upstream at once; later calls log in by themselves when there is no
  token or it has expired, and a 401 makes the client log in once more and
  repeat the call once before it gives up with :class:`Unauthorized`.
- Idempotent calls (GET, PUT of a key, GET of a big part) are retried with a
  bounded exponential backoff on connection errors and 5xx. A POST is repeated
  only when the connection failed before the request could be sent.
- One overall deadline per call: every public method answers or fails within
  ``timeout`` s (the setting ``upstream_timeout``), its retries, backoff and a
  login it needs included; each attempt's (connect, read) timeout is what is
  left of it, and the whole exchange (the answer's head and body) is cut at
  the deadline however the server trickles (:mod:`cofferd.resources.deadline`).
  Streaming a big part, down or up, is held to a progress rule instead: each
  window of ``timeout`` s must move ``MIN_PROGRESS`` bytes (a resume after a
  cut included); the answer to a PUT must come within ``timeout`` s of its
  body's end.
- The bearer token goes to the resource API only, never to a CDN URL: those
  are presigned and may point at a third party.
- Foreign exceptions become :mod:`cofferd.errors`; messages carry no token,
  password, key or presigned URL.
- Two kinds of credentials: a person's ``(email, password)`` (``login``,
  the boot credential) and an enrolled device's key (:class:`DeviceCredential`):
  the device gets each access token by signing a fresh, short-lived JWT
  assertion (RFC 7523 JWT bearer, EdDSA, PyJWT) and posting it to
  ``/v1/token``; a 401 on a call makes it sign again once. No password is
  involved, and no refresh token: the device signs again.
- Hooks for the field layer (``cofferd.field``), so it wraps this client
  rather than living in it: ``credential_source`` is asked for credentials
  when a call needs a login and none is held (the device's key when it is
  enrolled, else the boot credential); ``observer`` hears of every answer (contact, the ``Date``
  header) and every failed exchange (reachability).
- Thread-safe: one :class:`requests.Session` is shared. Its only per-request
  mutable state is the cookie jar, which is switched off; urllib3's connection
  pool is thread-safe. No lock is held across the network: a token renewal
  is one thread's round trip while the others wait on that renewal's event
  (within their deadline), so many threads whose token expired cause one
  login, not many, and a slow login blocks no call that has a token.
- A failed ``login`` leaves the working credentials and token in place.
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import jwt
import requests
import urllib3.exceptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cofferd.errors import (
    BadRequest,
    CorruptData,
    Unauthorized,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from cofferd.foreign import WatchedBody
from cofferd.names import check_name
from cofferd.resources import listing, wire
from cofferd.resources.deadline import (
    MIN_PROGRESS,
    Guard,
    GuardedAdapter,
    attached,
    watched,
)
from cofferd.resources.translate import (
    check_cdn_status,
    describe,
    json_body,
    never_sent,
    raise_for_status,
)
from cofferd.resources.wire import Committed, ResourceInfo, StoredBlob, UploadTicket

log = logging.getLogger(__name__)

#: Bytes asked of the socket at a time when streaming a big part. A read cut
#: short loses what it had, so this is also the most a resume fetches again.
DOWNLOAD_CHUNK = 1 << 20

#: RFC 7523's grant type: an access token for a signed assertion.
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: How long a device's login assertion is valid (the upstream allows up to 300 s).
ASSERTION_LIFETIME = 60
#: A device id as the upstream makes them (``d_`` + base32); it goes into a JWT header.
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DeviceCredential:
    """An enrolled device's credential: its id and its Ed25519 key. Its repr hides the key.

    The API client compares credentials by identity: keep one object per
    enrollment.
    """

    def __init__(self, device_id: str, key: Ed25519PrivateKey) -> None:
        if not DEVICE_ID.fullmatch(device_id):
            raise ValueError("a device id is 1-128 letters, digits, '_' or '-'")
        self.device_id = device_id
        self._key = key

    @property
    def subject(self) -> str:
        """The ``sub`` of the upstream's tokens and leases for this device."""
        return f"device:{self.device_id}"

    def assertion(self, audience: str, now: float) -> str:
        """A fresh JWT assertion for ``audience``: EdDSA, valid 60 s, a random jti."""
        iat = int(now)
        claims = {
            "iss": self.device_id,
            "sub": self.device_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME,
            "jti": base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.device_id})

    def __repr__(self) -> str:
        return f"DeviceCredential(device_id={self.device_id!r}, key=<hidden>)"


#: What a login holds: a person's (email, password), or a device's key.
Credentials = tuple[str, str] | DeviceCredential


def subject_of(credentials: Credentials) -> str:
    """The ``sub`` the upstream gives this login's tokens and leases."""
    if isinstance(credentials, DeviceCredential):
        return credentials.subject
    return credentials[0]


#: The largest multipart part size accepted (one part is held in memory while
#: it is sent); a larger offer is declined for a single PUT of the whole.
MAX_PART_SIZE = 256 << 20
#: S3's most parts of one multipart upload.
MAX_PARTS = 10_000


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent calls are repeated."""

    retries: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    # The protocol uses no cookies; refusing them keeps the shared session stateless.
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class UpstreamObserver(Protocol):
    """Told of each exchange with the resource API; must be quick and never raise."""

    def answered(self, resp: requests.Response) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


class ApiClient:
    """Talks to one upstream: its resource API and the CDN URLs it hands out."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 32,
        credential_source: Callable[[], Credentials | None] | None = None,
        wall: Callable[[], float] = time.time,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = (timeout, timeout)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._session = requests.Session()
        self._session.cookies.set_policy(_NoCookies())
        adapter = GuardedAdapter(pool_connections=4, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._lock = threading.Lock()  # guards the four fields below; never held across I/O
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
        self._observer = observer

    def close(self) -> None:
        """Close the connections and forget the credentials and the token."""
        with self._lock:
            self._credentials = None
            self._token = None
            self._refresh = None
        self._session.close()

    # -- authentication ---------------------------------------------------

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
        self._adopt_boot_credential()
        with self._lock:
            return None if self._credentials is None else subject_of(self._credentials)

    def login(self, email: str, password: str) -> None:
        """Check ``email``/``password`` with the upstream and keep them for later calls.

        Refused credentials raise :class:`Unauthorized` and leave the ones set
        before in place.
        """
        token, expires, refresh = self._fetch_token(email, password, self._deadline())
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

    def _adopt_boot_credential(self) -> None:
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

    def _deadline(self) -> float:
        return self._clock() + self._timeout[0]

    def _left(self, deadline: float, what: str) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise UpstreamUnavailable(
                f"no answer from the upstream for {what} within {self._timeout[0]:g} s"
            )
        return left

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
            resp = self._send("POST", "/v1/token", json=body, deadline=deadline, login=True)
            if resp.status_code == 200:
                token = wire.parse_token(json_body(resp, "token renewal"))
                return token.access_token, self._expiry(token.expires_in), held[1]
            # Refused (revoked, expired) or not offered: the password decides.
        return self._fetch_token(*credentials, deadline)

    def _device_token(self, device: DeviceCredential, deadline: float) -> tuple[str, float, None]:
        """An access token for the device's proof of key (RFC 7523)."""
        body = {
            "grant_type": JWT_BEARER,
            "assertion": device.assertion(self._base + "/v1/token", self._wall()),
        }
        resp = self._send("POST", "/v1/token", json=body, deadline=deadline, login=True)
        if resp.status_code == 401:
            raise Unauthorized(f"the upstream refused the device's login: {_detail(resp)}")
        raise_for_status(resp, "device login")
        token = wire.parse_token(json_body(resp, "device login"))
        return token.access_token, self._expiry(token.expires_in), None

    def enroll(self, token: str, public_key: str, name: str | None = None) -> tuple[str, str]:
        """Register this device's ``public_key`` with enrollment ``token``: (device id, role).

        A token the upstream refuses (unknown, spent, expired) is
        :class:`Unauthorized`; the token is never quoted.
        """
        body: dict[str, str] = {"enrollment_token": token, "public_key": public_key}
        if name is not None:
            body["name"] = name
        resp = self._send("POST", "/v1/devices", json=body, deadline=self._deadline())
        if resp.status_code == 401:
            raise Unauthorized(f"the upstream refused the enrollment: {_detail(resp)}")
        raise_for_status(resp, "enrollment")
        answer = json_body(resp, "enrollment")
        device_id = answer.get("device_id") if isinstance(answer, dict) else None
        role = answer.get("role") if isinstance(answer, dict) else None
        if not (isinstance(device_id, str) and DEVICE_ID.fullmatch(device_id)):
            raise UpstreamProtocolError("enrollment answer: no valid device_id")
        if not (isinstance(role, str) and DEVICE_ID.fullmatch(role)):
            raise UpstreamProtocolError("enrollment answer: no valid role")
        log.info("enrolled with the upstream as device %s (%s)", device_id, role)
        return device_id, role

    def _expiry(self, expires_in: float) -> float:
        # Renew a little early so a token does not expire in flight.
        return self._clock() + expires_in - min(30.0, expires_in / 10)

    def _fetch_token(
        self, email: str, password: str, deadline: float
    ) -> tuple[str, float, str | None]:
        # A person's login (email and password). Network only: the caller holds no lock.
        body = {"email": email, "password": password}
        resp = self._send("POST", "/v1/login", json=body, deadline=deadline, login=True)
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

    def _current_token(self, deadline: float) -> str:
        self._adopt_boot_credential()
        while True:
            with self._lock:
                credentials = self._credentials
                if credentials is None:
                    raise Unauthorized("log in first")
                if self._token is not None and self._clock() < self._token_expires:
                    return self._token
                renewal = self._renewing
                renewer = renewal is None
                if renewal is None:
                    renewal = self._renewing = _Renewal()
            if not renewer:
                if not renewal.done.wait(self._left(deadline, "a login")):
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

    def _drop_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:  # another thread may have renewed it already
                self._token = None

    # -- the resource API ---------------------------------------------------

    def get_resource(self, folder: str, name: str, version: int | None = None) -> ResourceInfo:
        """``folder/name``'s current version, or ``version`` (the one a publisher signed)."""
        check_name(folder, "folder")
        check_name(name, "name")
        query = "" if version is None else f"?version={int(version)}"
        body = self._api(
            "GET", f"/v1/resources/{folder}/{name}{query}", f"resource {folder}/{name}"
        )
        return wire.parse_resource(body, folder, name)

    def begin_upload(self, folder: str, name: str) -> UploadTicket:
        check_name(folder, "folder")
        check_name(name, "name")
        path = f"/v1/resources/{folder}/{name}/uploads"
        return wire.parse_ticket(self._api("POST", path, f"upload of {folder}/{name}", json={}))

    def commit_upload(
        self,
        folder: str,
        name: str,
        upload_id: str,
        *,
        small: bytes,
        key: bytes,
        big_size: int,
        big_sha256: str,
        plaintext_size: int,
        segment_size: int | None = None,
        segments: bytes | None = None,
    ) -> Committed:
        """Make the upload the next version; ``segments``: the big part's manifest (trust.md)."""
        check_name(folder, "folder")
        check_name(name, "name")
        body: dict[str, Any] = {
            "small": wire.b64encode(small),
            "key": wire.b64encode(key),
            "big_size": big_size,
            "big_sha256": big_sha256,
            "plaintext_size": plaintext_size,
        }
        if segments is not None:
            body["segment_size"] = segment_size
            body["segments"] = wire.b64encode(segments)
        path = f"/v1/resources/{folder}/{name}/uploads/{upload_id}/commit"
        answer = self._api("POST", path, f"commit of {folder}/{name}", json=body)
        return wire.parse_committed(answer, folder, name)

    def put_archive_key(self, archive_id: str, key: bytes) -> bool:
        """Register ``key`` for ``archive_id``; True if new, False if already so registered.

        A different key already registered raises :class:`Conflict`.
        """
        check_name(archive_id, "archive id")
        if len(key) != wire.KEY_SIZE:
            raise BadRequest(f"an archive key is {wire.KEY_SIZE} bytes")
        status, _ = self._api_status(
            "PUT",
            f"/v1/archives/{archive_id}/key",
            f"key of archive {archive_id}",
            json={"key": wire.b64encode(key)},
        )
        return status == 201

    def get_archive_key(self, archive_id: str) -> bytes:
        check_name(archive_id, "archive id")
        body = self._api("GET", f"/v1/archives/{archive_id}/key", f"key of archive {archive_id}")
        return wire.parse_archive_key(body, archive_id)

    def list_page(
        self, folder: str, cursor: str | None = None, limit: int = listing.PAGE_LIMIT
    ) -> tuple[list[listing.Listed], str | None]:
        """One page of ``folder``'s listing and the cursor of the next (None: the last)."""
        check_name(folder, "folder")
        query = urlencode({"limit": limit, **({"cursor": cursor} if cursor else {})})
        body = self._api("GET", f"/v1/resources/{folder}?{query}", f"listing of {folder}")
        return listing.parse_page(body)

    def _api(self, method: str, path: str, what: str, json: Any = None) -> Any:
        return self._api_status(method, path, what, json=json)[1]

    def _api_status(self, method: str, path: str, what: str, json: Any = None) -> tuple[int, Any]:
        deadline = self._deadline()
        for attempt in (1, 2):
            token = self._current_token(deadline)
            headers = {"Authorization": f"Bearer {token}"}
            resp = self._send(method, path, json=json, headers=headers, deadline=deadline)
            if resp.status_code == 401 and attempt == 1:
                log.info("the upstream refused the token; logging in again")
                self._drop_token(token)
                continue
            raise_for_status(resp, what)
            return resp.status_code, json_body(resp, what)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def exchange(
        self, method: str, path: str, *, auth: bool, **kwargs: Any
    ) -> Iterator[requests.Response]:
        """One exchange outside the resource API's answers (trust metadata, manifests).

        The response comes streamed, status unchecked; its body is read inside
        the block, which one deadline (``timeout``) covers whole. A transport
        failure is :class:`UpstreamUnavailable`, so the offline path applies.
        """
        deadline = self._deadline()
        extra = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            headers = dict(extra)
            token = self._current_token(deadline) if auth else None
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            left = self._left(deadline, f"{method} {path.split('?')[0]}")
            whole = Guard(left)
            try:
                with watched(whole):
                    with attached(whole):
                        resp = self._session.request(
                            method,
                            self._base + path,
                            headers=headers,
                            timeout=(left, left),
                            allow_redirects=False,
                            stream=True,
                            **kwargs,
                        )
                    if self._observer is not None:
                        self._observer.answered(resp)
                    with resp:
                        if resp.status_code == 401 and token is not None and attempt == 1:
                            self._drop_token(token)
                            continue
                        yield resp
                        return
            except requests.RequestException as exc:
                if self._observer is not None:
                    self._observer.failed(exc)
                raise UpstreamUnavailable(f"upstream unreachable: {describe(exc)}") from None

    # -- the CDN ----------------------------------------------------------

    def iter_big(self, url: str, size: int, offset: int = 0) -> Generator[bytes, None, None]:
        """Stream the big part at presigned ``url``: exactly ``size - offset`` bytes.

        A dropped connection resumes with ``Range: bytes=N-`` (bounded
        retries); more bytes than ``size`` raise :class:`CorruptData`.
        Integrity is the caller's to check (sha256, authentication).
        """
        failures = 0
        deadline = self._deadline()  # renewed by progress
        progress = Guard(self._timeout[0], progress=True)
        # Never ask for a range starting at the end: the CDN answers 416.
        while offset < size:
            try:
                with watched(progress):
                    for chunk in self._big_from(url, offset, size, deadline, progress):
                        offset += len(chunk)
                        failures = 0
                        deadline = self._deadline()
                        with progress.paused():  # the consumer's pace is not the CDN's
                            yield chunk
            except (requests.RequestException, _ServerError, _ShortRead) as exc:
                if offset == size:
                    return  # the connection failed after the last byte
                if progress.expired:
                    raise UpstreamUnavailable(
                        f"the CDN moved fewer than {MIN_PROGRESS} bytes of the big part"
                        f" in {self._timeout[0]:g} s"
                    ) from None
                left = deadline - self._clock()
                if failures >= self._retry.retries or left <= 0:
                    # from None: requests' message quotes the presigned URL, a
                    # credential, and tracebacks end up in logs.
                    raise UpstreamUnavailable(
                        f"cannot fetch the big part: {describe(exc)}"
                    ) from None
                self._sleep(min(left, self._retry.delay(failures)))
                failures += 1
            else:
                return

    def _big_from(
        self, url: str, offset: int, size: int, deadline: float, progress: Guard
    ) -> Iterator[bytes]:
        # One GET from ``offset``; the caller resumes after a failure.
        # identity: byte offsets for Range and big_size count stored bytes.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        left = self._left(deadline, "the big part")
        with attached(progress):
            resp = self._session.get(
                url, headers=headers, stream=True, timeout=(left, left), allow_redirects=False
            )
        with resp:
            if resp.status_code >= 500:
                raise _ServerError(resp.status_code)
            check_cdn_status(resp, partial=offset > 0)
            for chunk in _chunks(resp):
                progress.moved(len(chunk))
                offset += len(chunk)
                if offset > size:
                    raise CorruptData("the CDN served more bytes than the big part has")
                yield chunk
        if offset < size:
            raise _ShortRead()

    def put_big(self, url: str, chunks: Iterable[bytes]) -> StoredBlob | None:
        """PUT the big part to presigned ``url`` with chunked transfer; not retried.

        What the store says it stored, when it says (the reference upstream's
        own CDN answers ``{"size", "sha256"}``); None when it answers with no
        body, as an S3 store does: the commit verifies it then.
        An exception raised by ``chunks`` itself propagates unchanged.
        """
        progress = Guard(self._timeout[0], progress=True)
        body = WatchedBody(_counted(chunks, progress, self._timeout[0]))
        with body.source_errors_first():
            try:
                with watched(progress), attached(progress):
                    resp = self._session.put(
                        url,
                        data=body.chunks(),
                        headers={"Content-Type": "application/octet-stream"},
                        timeout=self._timeout,
                        allow_redirects=False,
                    )
            except requests.RequestException as exc:
                why = describe(exc)
                if progress.expired:
                    why = f"it took fewer than {MIN_PROGRESS} bytes in {self._timeout[0]:g} s"
                # from None: requests' message quotes the presigned URL.
                raise UpstreamUnavailable(f"cannot store the big part: {why}") from None
        check_cdn_status(resp, partial=False, expected=(200, 201))
        if not resp.content:
            return None
        return wire.parse_stored_blob(json_body(resp, "big part upload"))

    def part_url(self, folder: str, name: str, upload_id: str, part_number: int) -> str:
        """A presigned PUT for part ``part_number`` of a multipart upload (extension)."""
        check_name(folder, "folder")
        check_name(name, "name")
        path = f"/v1/resources/{folder}/{name}/uploads/{upload_id}/parts"
        what = f"part {part_number} of the upload of {folder}/{name}"
        return wire.parse_part_url(self._api("POST", path, what, json={"part_number": part_number}))

    def put_parts(
        self, chunks: Iterable[bytes], part_size: int, part_url: Callable[[int], str]
    ) -> int:
        """PUT ``chunks`` as parts 1, 2, ... of ``part_size`` bytes (the last shorter); their count.

        One part is held in memory at a time, so a part can be sent again: a
        part whose PUT fails (connection, 5xx, or 403 from a URL that expired
        meanwhile) is retried with a fresh URL from ``part_url``, with the
        bounded backoff of :class:`RetryPolicy`. At least one part is sent,
        empty if ``chunks`` is. An exception raised by ``chunks`` itself
        propagates unchanged, before the part it was filling is sent.
        """
        if part_size > MAX_PART_SIZE:
            raise BadRequest(f"a part of {part_size} bytes is over the {MAX_PART_SIZE} held")
        part = bytearray()
        count = 0
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                room = part_size - len(part)
                part += view[:room]
                view = view[room:]
                if len(part) == part_size:
                    count += 1
                    self._put_part(count, part, part_url)
                    # A new buffer, not clear(): the sent one may still be viewed.
                    part = bytearray()
        if part or not count:
            count += 1
            self._put_part(count, part, part_url)
        return count

    def _put_part(self, number: int, part: bytearray, part_url: Callable[[int], str]) -> None:
        if number > MAX_PARTS:
            raise BadRequest(f"the big part needs more than {MAX_PARTS} parts")
        failures = 0
        deadline = self._deadline()
        while True:
            url = part_url(number)
            left = self._left(deadline, f"part {number} of the big part")
            problem: str
            try:
                # A memoryview: sent with its Content-Length, never copied.
                with self._session.put(
                    url, data=memoryview(part), timeout=(left, left), allow_redirects=False
                ) as resp:
                    if resp.status_code == 200:
                        return
                    if resp.status_code < 500 and resp.status_code != 403:
                        check_cdn_status(resp, partial=False)
                    problem = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                problem = describe(exc)
            left = deadline - self._clock()
            if failures >= self._retry.retries or left <= 0:
                # The presigned URL is not quoted: it is a credential.
                raise UpstreamUnavailable(f"cannot store part {number} of the big part: {problem}")
            log.debug("part %d of a big part failed (%s); retrying", number, problem)
            self._sleep(min(left, self._retry.delay(failures)))
            failures += 1

    # -- transport ----------------------------------------------------------

    def _send(
        self, method: str, path: str, *, deadline: float, login: bool = False, **kwargs: Any
    ) -> requests.Response:
        # ``login``: a POST of a login, sent again after a 503 with Retry-After
        # (the server's word that it turned the login away unprocessed: too
        # many password checks under way), as an idempotent call would be.
        idempotent = method in ("GET", "PUT", "HEAD")
        attempt = 0
        while True:
            left = self._left(deadline, f"{method} {path}")
            whole = Guard(left)  # the answer's head and body, however it trickles
            try:
                with watched(whole), attached(whole):
                    resp = self._session.request(
                        method,
                        self._base + path,
                        timeout=(left, left),
                        allow_redirects=False,
                        **kwargs,
                    )
            except requests.RequestException as exc:
                if self._observer is not None:
                    self._observer.failed(exc)
                if whole.expired:  # cut by the deadline: nothing left to retry in
                    raise UpstreamUnavailable(
                        f"upstream unreachable: the answer to {method} {path.split('?')[0]}"
                        f" timed out (not whole within {left:.3g} s)"
                    ) from None
                if (idempotent or never_sent(exc)) and attempt < self._retry.retries:
                    log.debug(
                        "upstream %s %s failed (%s); retrying",
                        method,
                        path,
                        describe(exc),
                    )
                    self._sleep(min(self._retry.delay(attempt), self._left(deadline, path)))
                    attempt += 1
                    continue
                raise UpstreamUnavailable(f"upstream unreachable: {describe(exc)}") from exc
            if self._observer is not None:
                self._observer.answered(resp)
            turned_away = login and resp.status_code == 503 and "Retry-After" in resp.headers
            if (
                resp.status_code >= 500
                and (idempotent or turned_away)
                and attempt < self._retry.retries
            ):
                log.debug("upstream %s %s answered %d; retrying", method, path, resp.status_code)
                wait = self._retry.delay(attempt)
                after = resp.headers.get("Retry-After", "")
                if after.isdigit():  # the server's hint, within our bound
                    wait = max(wait, min(float(after), self._retry.max_delay))
                resp.close()
                self._sleep(min(wait, self._left(deadline, path)))
                attempt += 1
                continue
            return resp


def _detail(resp: requests.Response) -> str:
    """The upstream's one-line reason for a 401 (it names a rule, never a secret)."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str) or not detail.isprintable():
        return "HTTP 401"
    return detail[:200]


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives (``read1``: whatever one read gives), for the progress rule."""
    raw = resp.raw
    while True:
        # urllib3's errors as requests' iter_content gives them.
        try:
            chunk = raw.read1(DOWNLOAD_CHUNK)
        except urllib3.exceptions.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        if not chunk:
            return
        yield chunk


def _counted(chunks: Iterable[bytes], progress: Guard, answer_within: float) -> Iterator[bytes]:
    """An upload's body, each chunk counted once sent (when the next is asked for)."""
    source = iter(chunks)
    while True:
        with progress.paused():  # the source's pace (the publisher's input) is not the CDN's
            chunk = next(source, None)
        if chunk is None:
            break
        yield chunk
        progress.moved(len(chunk))
    progress.answer_within(answer_within)


class _Renewal:
    """One token renewal in flight: the others wait on ``done``, then read ``error``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Unauthorized | UpstreamError | None = None


class _ServerError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"the CDN answered HTTP {status}")


class _ShortRead(Exception):
    def __init__(self) -> None:
        super().__init__("the connection ended before the whole big part arrived")
