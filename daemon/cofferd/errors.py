"""The exception tree of cofferd.

Services raise these; foreign exceptions (requests, docker, OSError) are
translated at the boundary with ``raise ... from exc``. One place,
``cofferd.rpc.errors``, maps them to JSON-RPC error codes.

::

    CofferError
    ├── DecryptionError          any integrity failure of the encrypted format (opaque)
    ├── BadRequest               the caller's input is wrong
    │   ├── BadName              a folder, name or archive id fails the name rule
    │   └── TooLarge             over a documented size cap
    ├── Unauthorized             no credentials, or the upstream refused them
    ├── NotFound                 no such resource, key or archive
    ├── Conflict                 the operation clashes with one under way or with stored state
    ├── UpstreamError            the upstream failed us
    │   ├── UpstreamUnavailable  unreachable, timed out, or 5xx after bounded retries
    │   ├── UpstreamProtocolError  it answered something the protocol does not allow
    │   └── CorruptData          what it served fails its size / sha256 / authentication
    ├── DockerError              the Docker engine failed us
    │   ├── DockerUnavailable    unreachable
    │   └── DockerRefused        it answered, and refused
    └── Cancelled                the daemon is shutting down or the peer hung up

Messages never carry secrets (passwords, tokens, keys).
"""

from __future__ import annotations


class CofferError(Exception):
    """Base of every error cofferd raises on purpose."""


class DecryptionError(CofferError):
    """The ciphertext does not authenticate.

    One opaque error for every integrity failure (truncation, extension,
    reordering, a flipped bit, a wrong key or associated data), so that a
    failure tells nothing about which check failed.
    """

    def __init__(self, message: str = "ciphertext failed authentication") -> None:
        super().__init__(message)


class BadRequest(CofferError):
    """The caller's input is wrong."""


class BadName(BadRequest):
    """A folder, resource name or archive id does not follow the name rule."""


class TooLarge(BadRequest):
    """The input is over a documented size cap."""


class Unauthorized(CofferError):
    """No credentials are set, or the upstream refused them."""


class NotFound(CofferError):
    """The resource, key or archive does not exist."""


class Conflict(CofferError):
    """The operation clashes with one under way or with stored state."""


class UpstreamError(CofferError):
    """The upstream failed us."""


class UpstreamUnavailable(UpstreamError):
    """The upstream is unreachable, timed out, or kept answering 5xx."""


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something protocol v1 does not allow."""


class CorruptData(UpstreamError):
    """Data from the upstream, the CDN or the cache fails its checks."""


class DockerError(CofferError):
    """The Docker engine failed us."""


class DockerUnavailable(DockerError):
    """The Docker engine cannot be reached."""


class DockerRefused(DockerError):
    """The Docker engine answered and refused the request."""


class Cancelled(CofferError):
    """The work was cut short: the daemon stops or the peer hung up."""
