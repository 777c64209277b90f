"""python-tuf's refusals named by docs/trust.md's rules; transport failures stay transport."""

from __future__ import annotations

import pytest
from tuf.api import exceptions as tuf_errors

from cofferd.errors import Untrusted, UpstreamUnavailable
from cofferd.trust.rules import translate


@pytest.mark.parametrize(
    ("exc", "rule"),
    [
        (tuf_errors.ExpiredMetadataError("timestamp.json is expired"), "frozen"),
        (tuf_errors.BadVersionNumberError("New timestamp version 1 must be >= 2"), "rollback"),
        (tuf_errors.BadVersionNumberError("Expected targets.json version 1, got 2."), "rollback"),
        (tuf_errors.BadVersionNumberError("Expected snapshot version 3, got 2"), "mix-and-match"),
        (tuf_errors.BadVersionNumberError("Expected publishers v3, got v2."), "mix-and-match"),
        (tuf_errors.LengthOrHashMismatchError("hash mismatch"), "mix-and-match"),
        (tuf_errors.DownloadLengthMismatchError("more than 16384 bytes"), "endless-data"),
        (tuf_errors.UnsignedMetadataError("1 of 2 signatures"), "signature"),
        (tuf_errors.RepositoryError("Expected 'root', got 'targets'"), "signature"),
        (
            tuf_errors.RepositoryError("Role publishers was delegated but is not part of snapshot"),
            "unsigned",
        ),
        (tuf_errors.RepositoryError("New snapshot is missing info for 'x.json'"), "mix-and-match"),
        (ValueError("not JSON"), "signature"),
    ],
)
def test_each_refusal_has_its_rule(exc: Exception, rule: str) -> None:
    got = translate(exc)
    assert isinstance(got, Untrusted)
    assert got.rule == rule


def test_an_unreachable_upstream_is_not_a_refusal() -> None:
    cause = UpstreamUnavailable("upstream unreachable: connection refused")
    wrapped = tuf_errors.DownloadError("Failed to download")
    wrapped.__cause__ = cause
    assert translate(wrapped) is cause
    assert isinstance(translate(tuf_errors.DownloadHTTPError("x", 503)), UpstreamUnavailable)


def test_an_unknown_rule_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no trust rule"):
        Untrusted("x", rule="nope")
