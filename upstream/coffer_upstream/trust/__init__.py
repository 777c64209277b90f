"""The TUF repository the upstream serves (docs/trust.md, issue 20).

The owner installs ``root`` and the top-level ``targets`` (signed offline);
publishers PUT their delegated role's metadata (signed on their machines);
the upstream signs ``snapshot`` and ``timestamp`` with its online key. Every
signature, version and delegation rule is python-tuf's (its Metadata API);
this package stores the files and decides the order of the checks.

Errors (each refusal names its rule in its message; nothing is stored)::

    TrustError
    ├── Invalid          bad metadata, a role not delegated, expired, a path not allowed (400)
    ├── Unsigned         not signed by a threshold of the keys its parent names (403)
    ├── Conflict         the wrong version, or what it needs is not installed yet (409)
    └── OnlineKeyUnknown the installed root does not name this upstream's online key (503)
"""

from __future__ import annotations


class TrustError(Exception):
    """Metadata refused; the message is one line for the operator or the publisher."""


class Invalid(TrustError):
    pass


class Unsigned(TrustError):
    pass


class Conflict(TrustError):
    pass


class OnlineKeyUnknown(TrustError):
    pass
