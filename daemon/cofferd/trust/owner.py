"""The fleet owner's offline tools: the first root, root rotation, the publishers.

Everything here runs on the owner's machine, with the root and targets keys
at hand and no network; what it makes is handed to the upstream's operator
(``coffer-upstream trust root FILE`` / ``trust targets FILE``) and the first
root to every device (``coffer trust init``). See docs/operations.md.

- :func:`new_repository`: ``1.root.json`` and ``1.targets.json``. Root lists
  the root keys (a threshold of them), the targets keys, and the upstream's
  online key for ``snapshot`` and ``timestamp``; targets delegates the role
  ``publishers`` (the publishers' keys, threshold 1, paths
  :data:`PUBLISHER_PATHS`, terminating).
- :func:`rotate_root`: root N+1, signed by a threshold of the old root keys
  and of the new ones, as a TUF client requires to follow it.
- :func:`set_publishers`: the next targets, whose delegation names exactly
  the publishers' keys given: leaving a key out revokes it.

Every result is checked with python-tuf's own verification before it is
returned (a root that would not verify is never written). The files are
python-tuf's JSON serialization; signatures are over its canonical JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    Root,
    Targets,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

__all__ = [
    "DEFAULT_EXPIRY",
    "PUBLISHERS_ROLE",
    "PUBLISHER_PATHS",
    "MetadataError",
    "default_expiry",
    "new_repository",
    "rotate_root",
    "set_publishers",
]

#: The delegated role that signs releases (docs/trust.md).
PUBLISHERS_ROLE = "publishers"
#: What it may sign: ``resources/<folder>/<name>`` and ``archives/<id>``. TUF's
#: patterns match one path segment per ``*``, so a resource needs two.
PUBLISHER_PATHS = ("resources/*/*", "archives/*")
#: How long root, targets and a publisher's role stay valid unless told.
DEFAULT_EXPIRY = timedelta(days=365)

_SERIALIZER = JSONSerializer(compact=False)


class MetadataError(ValueError):
    """Metadata given to a tool that it cannot build on, or a request it cannot satisfy."""


def default_expiry(days: int | None = None, now: datetime | None = None) -> datetime:
    """``now`` (UTC, whole seconds) plus ``days`` (default 365): TUF's ``expires``."""
    start = (now or datetime.now(UTC)).replace(microsecond=0)
    return start + (DEFAULT_EXPIRY if days is None else timedelta(days=days))


def _public(signer: Signer) -> Key:
    return signer.public_key


def _keyids(keys: Sequence[Key]) -> list[str]:
    ids = [key.keyid for key in keys]
    if len(set(ids)) != len(ids):
        raise MetadataError("the same key is given twice")
    return ids


def _check_threshold(threshold: int, count: int, what: str) -> None:
    if not 1 <= threshold <= count:
        raise MetadataError(f"the {what} threshold must be between 1 and {count} (the keys given)")


def _sign(md: Metadata[Root] | Metadata[Targets], signers: Sequence[Signer]) -> None:
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)


def new_repository(
    root_signers: Sequence[Signer],
    threshold: int,
    online_key: Key,
    publisher_keys: Sequence[Key],
    targets_signers: Sequence[Signer] | None = None,
    expires: datetime | None = None,
) -> tuple[bytes, bytes]:
    """The first root and targets: ``(1.root.json, 1.targets.json)``.

    Root's and targets' keys are those of the signers given (every one signs);
    targets is signed by the root keys unless ``targets_signers`` are given,
    with the same threshold (at most the number of targets keys).
    """
    if not root_signers:
        raise MetadataError("give at least one root key")
    if not publisher_keys:
        raise MetadataError("give at least one publisher key")
    root_keys = [_public(s) for s in root_signers]
    _check_threshold(threshold, len(_keyids(root_keys)), "root")
    t_signers = list(targets_signers) if targets_signers else list(root_signers)
    targets_keys = [_public(s) for s in t_signers]
    _keyids(targets_keys)
    _keyids(publisher_keys)
    if online_key.keyid in {k.keyid for k in [*root_keys, *targets_keys]}:
        raise MetadataError("the online key must not be an offline (root or targets) key")
    when = expires or default_expiry()

    root = Root(expires=when, consistent_snapshot=True)
    root.roles["root"].threshold = threshold
    root.roles["targets"].threshold = min(threshold, len(targets_keys))
    for key in root_keys:
        root.add_key(key, "root")
    for key in targets_keys:
        root.add_key(key, "targets")
    root.add_key(online_key, "snapshot")
    root.add_key(online_key, "timestamp")
    root_md = Metadata(root)
    _sign(root_md, root_signers)

    targets_md = Metadata(Targets(expires=when))
    targets_md.signed.delegations = _delegations(publisher_keys)
    _sign(targets_md, t_signers)

    root_md.verify_delegate("root", root_md)
    root_md.verify_delegate("targets", targets_md)
    return root_md.to_bytes(_SERIALIZER), targets_md.to_bytes(_SERIALIZER)


def _delegations(publisher_keys: Sequence[Key]) -> Delegations:
    role = DelegatedRole(
        name=PUBLISHERS_ROLE,
        keyids=_keyids(publisher_keys),
        threshold=1,
        terminating=True,
        paths=list(PUBLISHER_PATHS),
    )
    return Delegations(
        keys={key.keyid: key for key in publisher_keys}, roles={PUBLISHERS_ROLE: role}
    )


def _parse(data: bytes, kind: type[Root] | type[Targets], what: str) -> Metadata:  # type: ignore[type-arg]
    try:
        md = Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise MetadataError(f"{what} is not TUF metadata") from exc
    if not isinstance(md.signed, kind):
        raise MetadataError(f"{what} is {md.signed.type} metadata, not {kind.type}")
    return md


def rotate_root(
    current_root: bytes,
    old_signers: Sequence[Signer],
    new_signers: Sequence[Signer],
    threshold: int,
    online_key: Key | None = None,
    expires: datetime | None = None,
) -> bytes:
    """Root N+1: the root role's keys become ``new_signers``' (``threshold`` of them).

    It is signed by ``old_signers`` (a threshold of root N's keys) and
    ``new_signers`` (all of them, at least ``threshold``), so that a device
    pinned at N verifies it with N's keys and with its own. ``online_key``
    also replaces the snapshot and timestamp key. The targets keys stay.
    """
    current: Metadata[Root] = _parse(current_root, Root, "the current root")
    old_role = current.signed.roles["root"]
    old_ids = {_public(s).keyid for s in old_signers}
    strangers = old_ids - set(old_role.keyids)
    if strangers:
        raise MetadataError(
            f"{len(strangers)} of the old keys given are not root keys of "
            f"root version {current.signed.version}"
        )
    if len(old_ids) < old_role.threshold:
        raise MetadataError(
            f"root version {current.signed.version} needs {old_role.threshold} of its keys "
            f"to sign the next; {len(old_ids)} given"
        )
    if not new_signers:
        raise MetadataError("give at least one new root key")
    new_keys = [_public(s) for s in new_signers]
    _check_threshold(threshold, len(_keyids(new_keys)), "root")

    # A copy of its own: python-tuf's to_dict/from_dict share the role lists.
    root = copy.deepcopy(current.signed)
    for keyid in list(root.roles["root"].keyids):
        root.revoke_key(keyid, "root")
    for key in new_keys:
        root.add_key(key, "root")
    root.roles["root"].threshold = threshold
    if online_key is not None:
        for role in ("snapshot", "timestamp"):
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(online_key, role)
    root.version = current.signed.version + 1
    root.expires = expires or default_expiry()
    md = Metadata(root)
    signers = {_public(s).keyid: s for s in [*old_signers, *new_signers]}
    _sign(md, list(signers.values()))
    try:
        current.verify_delegate("root", md)  # what a device pinned at N checks
        md.verify_delegate("root", md)
    except UnsignedMetadataError as exc:
        raise MetadataError(f"root version {root.version} would not verify: {exc}") from exc
    return md.to_bytes(_SERIALIZER)


def set_publishers(
    current_targets: bytes,
    targets_signers: Sequence[Signer],
    publisher_keys: Sequence[Key],
    root: bytes | None = None,
    expires: datetime | None = None,
) -> bytes:
    """The next targets: the ``publishers`` delegation names exactly ``publisher_keys``.

    A key left out is revoked: what it signed stops verifying on every device
    at its next refresh. With ``root``, the result is checked against it
    (signed by a threshold of its targets keys) before it is returned.
    """
    if not targets_signers:
        raise MetadataError("give the targets key(s) to sign with")
    if not publisher_keys:
        raise MetadataError(
            "give at least one publisher key (a delegation to no key delivers nothing)"
        )
    current: Metadata[Targets] = _parse(current_targets, Targets, "the current targets")
    targets = copy.deepcopy(current.signed)
    delegations = targets.delegations
    if delegations is None or delegations.roles is None:
        delegations = _delegations(publisher_keys)
    else:
        old = delegations.roles.get(PUBLISHERS_ROLE)
        fresh = _delegations(publisher_keys)
        assert fresh.roles is not None
        role = fresh.roles[PUBLISHERS_ROLE]
        if old is not None:  # keep what the owner set there (paths, threshold)
            role = DelegatedRole(
                name=PUBLISHERS_ROLE,
                keyids=role.keyids,
                threshold=min(old.threshold, len(role.keyids)),
                terminating=old.terminating,
                paths=old.paths,
                path_hash_prefixes=old.path_hash_prefixes,
            )
        still_used = {
            k for name, r in delegations.roles.items() if name != PUBLISHERS_ROLE for k in r.keyids
        }
        keys = {kid: key for kid, key in delegations.keys.items() if kid in still_used}
        keys.update(fresh.keys)
        roles = dict(delegations.roles)
        roles[PUBLISHERS_ROLE] = role
        delegations = Delegations(keys=keys, roles=roles)
    targets.delegations = delegations
    targets.version = current.signed.version + 1
    targets.expires = expires or default_expiry()
    md = Metadata(targets)
    _sign(md, targets_signers)
    if root is not None:
        root_md: Metadata[Root] = _parse(root, Root, "the root")
        try:
            root_md.verify_delegate("targets", md)
        except UnsignedMetadataError as exc:
            raise MetadataError(
                f"the targets keys given are not a threshold of root version "
                f"{root_md.signed.version}'s targets keys: {exc}"
            ) from exc
    return md.to_bytes(_SERIALIZER)
