"""The checks of an upstream answer against the release a publisher signed.

Applied before a byte of the release is read (:mod:`cofferd.field.loads`): the
answer's version, the small part's length and SHA-256, the key's commitment,
the big part's size and SHA-256, the plaintext size and the segment size.
Digests are compared in constant time; messages name the field, never a
value (a key, a digest of a small part).
"""

from __future__ import annotations

import hashlib
import hmac

from cofferd.binary_split.stream import resource_associated_data
from cofferd.errors import Untrusted
from cofferd.resources.segments import MAX_SEGMENT_SIZE, SignedSegments
from cofferd.resources.wire import ResourceInfo
from cofferd.trust.release import ResourceRelease, key_commitment


def check_answer(info: ResourceInfo, release: ResourceRelease) -> None:
    """Refuse ``info`` unless every field matches ``release`` (rules digest, key-commitment)."""
    what = f"{info.folder}/{info.name}"
    if (info.folder, info.name) != (release.folder, release.name):
        raise Untrusted(f"{what}: the answer is about another resource", rule="digest")
    if info.version != release.version:
        raise Untrusted(
            f"{what}: the upstream answered version {info.version}, the signed release"
            f" is version {release.version}",
            rule="digest",
        )
    small = hashlib.sha256(info.small).hexdigest()
    if len(info.small) != release.small_size or not hmac.compare_digest(
        small, release.small_sha256
    ):
        raise Untrusted(f"{what}: the small part differs from the signed one", rule="digest")
    commitment = key_commitment(info.key, resource_associated_data(info.folder, info.name))
    if not hmac.compare_digest(commitment, release.key_commitment):
        raise Untrusted(
            f"{what}: the key does not match the signed commitment", rule="key-commitment"
        )
    if info.big_size != release.big_size or not hmac.compare_digest(
        info.big_sha256, release.big_sha256
    ):
        raise Untrusted(
            f"{what}: the big part's size or digest differs from the signed", rule="digest"
        )
    if info.plaintext_size != release.plaintext_size:
        raise Untrusted(f"{what}: the plaintext size differs from the signed one", rule="digest")
    if release.segment_size > MAX_SEGMENT_SIZE:
        raise Untrusted(
            f"{what}: the signed segment size is over {MAX_SEGMENT_SIZE} bytes", rule="digest"
        )


def segments_of(release: ResourceRelease) -> SignedSegments:
    """What a cold load checks the big part's chunks against."""
    return SignedSegments(
        version=release.version,
        big_size=release.big_size,
        segment_size=release.segment_size,
        segments_sha256=release.segments_sha256,
    )
