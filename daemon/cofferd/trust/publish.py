"""Signing a release into the ``publishers`` role and publishing it (docs/trust.md).

Runs in the publisher's ``coffer`` process, never in cofferd: the private
key is loaded here (:mod:`cofferd.trust.keys`) and only signed metadata
crosses cofferd's socket. Through cofferd's methods:

1. ``trust.metadata {"role": "publishers"}`` answers the top-level targets
   (verified by cofferd against its pinned root) and the role's current text
   and version (``role_version``, from the verified snapshot). A role whose
   text no longer verifies (its last signer's key was revoked) comes as
   ``role: null``: the next version starts afresh, carrying nothing of it,
   so each release still to be delivered is signed again;
2. :func:`build_role` checks that text against the delegation the top-level
   targets makes (python-tuf's ``verify_delegate``: the role must be signed by
   a threshold of the publishers' keys; metadata the delegation did not sign,
   an upstream's forgery, is never built on), adds or replaces the target,
   bumps the version (1 for the first) and the expiry, and signs;
3. ``trust.publish {"role", "metadata"}`` hands it to the upstream, which
   takes only version current + 1: another publisher who published in
   between makes it a conflict, and the whole round starts again from 1, a
   bounded number of times (:data:`ATTEMPTS`).

:func:`check_delegated` is the same check as step 2 without signing, for a
command to run before it uploads anything (a key the owner did not delegate
to, or no pinned root, fails before a version is stored).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import DelegatedRole, Metadata, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from coffer.errors import Conflict
from cofferd.trust.owner import PUBLISHERS_ROLE, default_expiry
from cofferd.trust.release import ArchiveRelease, ReleaseFormatError, parse_target

__all__ = [
    "ATTEMPTS",
    "NotDelegated",
    "PublishError",
    "RaceLost",
    "RoleUntrusted",
    "TrustCaller",
    "build_role",
    "check_delegated",
    "publish_release",
]

#: Rounds of fetch, sign, publish before giving up on a busy role.
ATTEMPTS = 5


class PublishError(Exception):
    """A release that cannot be signed or published; nothing was published."""


class NotDelegated(PublishError):
    """The key, or the target's path, is not one the owner delegated to ``publishers``."""


class RoleUntrusted(PublishError):
    """The role's current text (or the targets) did not verify: not built on."""


class RaceLost(PublishError):
    """Other publishers won every round."""


class TrustCaller(Protocol):
    """What publishing needs of :class:`coffer.client.Client`."""

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, fds: Iterable[int] = ()
    ) -> Any: ...


def _metadata(text: object, what: str) -> Metadata[Targets]:
    if not isinstance(text, str):
        raise RoleUntrusted(f"cofferd's trust.metadata answer has no {what} text")
    try:
        md = Metadata[Targets].from_bytes(text.encode("utf-8"))
    except DeserializationError as exc:
        raise RoleUntrusted(f"the {what} metadata cofferd passed on is not TUF metadata") from exc
    if not isinstance(md.signed, Targets):
        raise RoleUntrusted(f"the {what} metadata is {md.signed.type}, not targets")
    return md


def _delegation(targets: Metadata[Targets], role: str) -> DelegatedRole:
    delegations = targets.signed.delegations
    found = None
    if delegations is not None and delegations.roles is not None:
        found = delegations.roles.get(role)
    if found is None:
        raise NotDelegated(f"the fleet's targets metadata delegates no role named {role!r}")
    return found


def check_delegated(
    answer: Mapping[str, Any], path: str, signer: Signer, role: str = PUBLISHERS_ROLE
) -> DelegatedRole:
    """The delegation, if it lets ``signer`` sign ``path``; :class:`NotDelegated` otherwise."""
    delegation = _delegation(_metadata(answer.get("targets"), "top-level targets"), role)
    if not delegation.is_delegated_path(path):
        raise NotDelegated(f"the role {role!r} may not sign {path}")
    keyid = signer.public_key.keyid
    if keyid not in delegation.keyids:
        raise NotDelegated(
            f"this key (keyid {keyid[:16]}...) is not one the fleet's owner delegated "
            f"{role!r} to: ask them to add its .pub (`coffer trust publishers`)"
        )
    return delegation


def build_role(
    answer: Mapping[str, Any],
    target: Mapping[str, Any],
    signer: Signer,
    expires: datetime | None = None,
    role: str = PUBLISHERS_ROLE,
) -> bytes:
    """The role's next version: the current one (verified) with ``target`` added, signed.

    ``answer`` is ``trust.metadata``'s; ``target`` a release's target with its
    ``path`` (``{"path": ..., **release.to_target()}``).
    """
    path, file = _target_file(target)
    check_delegated(answer, path, signer, role)
    parent = _metadata(answer.get("targets"), "top-level targets")
    current_text = answer.get("role")
    if current_text is None:
        # Never published, or (role_version given) published but signed by a key
        # the delegation no longer names: nothing of it is carried over.
        md = Metadata(Targets(version=_count(answer.get("role_version")) + 1))
    else:
        md = _metadata(current_text, role)
        try:
            parent.verify_delegate(role, md)
        except UnsignedMetadataError as exc:
            raise RoleUntrusted(
                f"the current {role!r} metadata is not signed by the keys the fleet's "
                f"owner delegated to: refusing to build on it ({exc})"
            ) from exc
        md.signed.version += 1
    _not_older(md.signed.targets.get(path), file)
    md.signed.targets[path] = file
    md.signed.expires = expires or default_expiry()
    md.signatures.clear()
    md.sign(signer)
    return md.to_bytes(JSONSerializer(compact=True))


def _count(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RoleUntrusted("cofferd's trust.metadata answer has a bad role_version")
    return value


def _target_file(target: Mapping[str, Any]) -> tuple[str, TargetFile]:
    fields = copy.deepcopy(dict(target))
    path = fields.pop("path", None)
    if not isinstance(path, str):
        raise PublishError("the release's target has no path")
    try:
        file = TargetFile.from_dict(fields, path)
        parse_target(file)  # the fields a device checks, before anything is signed
    except (ReleaseFormatError, ValueError, KeyError, TypeError) as exc:
        raise PublishError(f"the release's target for {path} is malformed: {exc}") from exc
    return path, file


def _not_older(signed: TargetFile | None, new: TargetFile) -> None:
    """A resource's signed version never goes down: devices would refuse it as a rollback."""
    if signed is None:
        return
    try:
        old, fresh = parse_target(signed), parse_target(new)
    except ReleaseFormatError:
        return  # a target of another shape is replaced
    if isinstance(old, ArchiveRelease) or isinstance(fresh, ArchiveRelease):
        return
    if fresh.version < old.version:
        raise PublishError(
            f"{new.path}: version {old.version} is signed already; refusing to sign "
            f"the older version {fresh.version} (devices would refuse it as a rollback)"
        )


def publish_release(
    client: TrustCaller,
    target: Mapping[str, Any],
    signer: Signer,
    expires: datetime | None = None,
    role: str = PUBLISHERS_ROLE,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Sign ``target`` into ``role`` and publish it through cofferd: ``{"role", "version"}``.

    A conflict (another publisher's new version won) starts over from a fresh
    ``trust.metadata``, up to ``attempts`` times, with a short random pause.
    """
    for attempt in range(attempts):
        answer = client.call("trust.metadata", {"role": role})
        if not isinstance(answer, Mapping):
            raise RoleUntrusted("cofferd's trust.metadata answer is not an object")
        metadata = build_role(answer, target, signer, expires, role)
        try:
            result = client.call("trust.publish", {"role": role, "metadata": metadata.decode()})
        except Conflict:
            if attempt + 1 < attempts:
                sleep(random.uniform(0.05, 0.25) * (attempt + 1))  # noqa: S311 (not a secret)
            continue
        if not isinstance(result, dict):
            raise PublishError("cofferd's trust.publish answer is not an object")
        return result
    raise RaceLost(
        f"other publishers changed the {role!r} metadata {attempts} times while this one "
        "was signed; try again"
    )
