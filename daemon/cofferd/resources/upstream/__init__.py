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

Modules: :mod:`.client` (:class:`ApiClient`, the resource API), :mod:`.tokens`
(the login and its token), :mod:`.credentials` (a person's or a device's),
:mod:`.cdn` (big parts at presigned URLs), :mod:`.transport` (the session,
deadlines and retries).
"""

from __future__ import annotations

from cofferd.resources.upstream.cdn import DOWNLOAD_CHUNK, MAX_PART_SIZE, MAX_PARTS
from cofferd.resources.upstream.client import ApiClient
from cofferd.resources.upstream.credentials import (
    ASSERTION_LIFETIME,
    DEVICE_ID,
    JWT_BEARER,
    Credentials,
    DeviceCredential,
    subject_of,
)
from cofferd.resources.upstream.transport import RetryPolicy, UpstreamObserver

__all__ = [
    "ASSERTION_LIFETIME",
    "DEVICE_ID",
    "DOWNLOAD_CHUNK",
    "JWT_BEARER",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "ApiClient",
    "Credentials",
    "DeviceCredential",
    "RetryPolicy",
    "UpstreamObserver",
    "subject_of",
]
