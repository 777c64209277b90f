"""python-tuf's refusals, named by the rules of docs/trust.md.

python-tuf applies TUF's rules; this maps what it raises to the rule a
caller is told (``data.rule`` of error 422), at the boundary, with
``raise ... from``. A transport failure under python-tuf's ``DownloadError``
is the :class:`~cofferd.errors.UpstreamUnavailable` the fetcher raised: it is
given back as it is, so the offline path applies.

=================================  ===============
python-tuf                         rule
=================================  ===============
ExpiredMetadataError               frozen
BadVersionNumberError (a version   rollback
lower than one seen)
BadVersionNumberError (a version   mix-and-match
other than its parent lists),
LengthOrHashMismatchError
DownloadLengthMismatchError        endless-data
RepositoryError: a delegated role   unsigned
in no snapshot yet
UnsignedMetadataError, other       signature
RepositoryError
=================================  ===============
"""

from __future__ import annotations

import re

from tuf.api import exceptions as tuf_errors

from cofferd.errors import CofferError, Untrusted, UpstreamUnavailable

# "Expected snapshot version 3, got 2" (snapshot vs timestamp) and
# "Expected targets v3, got v2." (a targets role vs snapshot): the files
# disagree with their parent, not with an older state.
_MISMATCH = re.compile(r"Expected snapshot version |Expected \S+ v\d+, got v\d+")
_MISSING = re.compile(r"(does not contain|is missing) info")
# A role delegated that no snapshot lists yet: nobody has signed in it (docs/trust.md).
_NEVER_PUT = re.compile(r"was delegated but is not part of snapshot")


def translate(exc: Exception) -> CofferError:
    """The cofferd error for an exception python-tuf raised (or let through)."""
    if isinstance(exc, CofferError):
        return exc
    cause = exc.__cause__
    if isinstance(exc, tuf_errors.DownloadError) and isinstance(cause, UpstreamUnavailable):
        return cause
    text = str(exc)[:300]
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return Untrusted(f"the trust metadata has expired: {text}", rule="frozen")
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        if _MISMATCH.search(text):
            return Untrusted(f"the trust metadata does not agree: {text}", rule="mix-and-match")
        return Untrusted(f"the trust metadata is older than seen before: {text}", rule="rollback")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return Untrusted(f"the trust metadata does not agree: {text}", rule="mix-and-match")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return Untrusted(
            f"a trust metadata file is longer than allowed: {text}", rule="endless-data"
        )
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return Untrusted(
            f"trust metadata without a threshold of signatures: {text}", rule="signature"
        )
    if isinstance(exc, tuf_errors.RepositoryError):
        if _NEVER_PUT.search(text):
            return Untrusted(f"no publisher has signed yet: {text}", rule="unsigned")
        if _MISSING.search(text):
            return Untrusted(f"the trust metadata does not agree: {text}", rule="mix-and-match")
        return Untrusted(f"the trust metadata is not valid: {text}", rule="signature")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return UpstreamUnavailable(f"the upstream answered HTTP {exc.status_code} for metadata")
    if isinstance(exc, tuf_errors.DownloadError):
        return UpstreamUnavailable(f"cannot fetch the trust metadata: {text}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        # Metadata that does not parse: not signed as TUF requires.
        return Untrusted(
            f"the trust metadata does not parse: {type(exc).__name__}", rule="signature"
        )
    raise exc
