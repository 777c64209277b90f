"""The device's trust: which release of a resource or archive a publisher signed.

:class:`Trust` is the decision the load path asks first (docs/trust.md):

- ``trust = "off"``: every answer is None and loads deliver as before;
- ``trust = "required"``: no pinned root is :class:`Untrusted` ``not-pinned``;
  otherwise the metadata is refreshed with ``tuf.ngclient`` (a new
  ``Updater`` per refresh, anchored on the root in the metadata dir, at most
  every ``trust_refresh_interval`` seconds, one at a time), the target of the
  path looked up and parsed, and a version lower than the highest this
  device verified refused (``rollback``). No target: ``unsigned``.

An unreachable upstream is not a refusal: the last release this device
verified for the path (kept in the index) is the decision, and the lease
rules of ``cofferd.field`` say whether it may be used offline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import DelegatedRole, Metadata, Snapshot, TargetFile, Targets
from tuf.ngclient import Updater, UpdaterConfig

from cofferd.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    StateUnwritable,
    Untrusted,
    UpstreamUnavailable,
)
from cofferd.foreign import printable
from cofferd.resources.index import Index
from cofferd.resources.translate import json_body, raise_for_status
from cofferd.resources.upstream import ApiClient
from cofferd.trust.anchor import Anchor
from cofferd.trust.fetcher import UpstreamFetcher
from cofferd.trust.release import (
    ArchiveRelease,
    ReleaseFormatError,
    ResourceRelease,
    archive_path,
    parse_target,
    resource_path,
)
from cofferd.trust.rules import translate

log = logging.getLogger(__name__)

#: A delegated role's name: what goes into ``/v1/tuf/roles/{role}``.
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOP_LEVEL = frozenset({"root", "timestamp", "snapshot", "targets"})
#: Longest metadata text ``trust.publish`` forwards (python-tuf's targets cap).
MAX_METADATA_BYTES = UpdaterConfig().targets_max_length


class Trust:
    """Trust decisions for one upstream; thread-safe."""

    def __init__(
        self,
        *,
        mode: str,
        refresh_interval: float,
        state_dir: Path,
        upstream_url: str,
        index: Index,
        client: Callable[[], ApiClient],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.mode = mode
        self._interval = refresh_interval
        self.anchor = Anchor(state_dir)
        self._base = upstream_url.rstrip("/")
        self._index = index
        self._client = client
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()  # one refresh, one lookup at a time
        self._updater: Updater | None = None
        self._refreshed_at = float("-inf")
        self._last: dict[str, Any] | None = None

    @property
    def required(self) -> bool:
        return self.mode == "required"

    # -- decisions -------------------------------------------------------------

    def resource_release(self, folder: str, name: str) -> ResourceRelease | None:
        """The signed release of ``folder/name`` to deliver, or None when trust is off."""
        if not self.required:
            return None
        release = self._release(resource_path(folder, name))
        if not isinstance(release, ResourceRelease):
            raise Untrusted(f"the target of {folder}/{name} is not a resource's", rule="digest")
        return release

    def archive_release(self, archive_id: str) -> ArchiveRelease | None:
        """The signed release of archive ``archive_id``, or None when trust is off."""
        if not self.required:
            return None
        release = self._release(archive_path(archive_id))
        if not isinstance(release, ArchiveRelease):
            raise Untrusted(
                f"the target of archive {archive_id} is not an archive's", rule="digest"
            )
        return release

    def verified(self, release: ResourceRelease | ArchiveRelease) -> None:
        """``release`` passed every check: keep it (the highest version, offline use)."""
        version = release.version if isinstance(release, ResourceRelease) else 0
        target = json.dumps(release.to_target(), sort_keys=True)
        if self._index.release(release.path) == (version, target):
            return  # a warm load of the same release writes nothing
        try:
            self._index.remember_release(release.path, version, target)
        except StateUnwritable as exc:
            log.error("%s verified, not remembered: %s", release.path, exc)  # noqa: TRY400

    def _release(self, path: str) -> ResourceRelease | ArchiveRelease:
        try:
            target = self._lookup(path)
        except UpstreamUnavailable as exc:
            return self._last_verified(path, exc)
        except Untrusted as exc:
            if exc.rule != "unsigned":  # a role no publisher signed yet: no target
                raise
            target = None
        if target is None:
            self._unsigned(path)
        release = _parse(target)
        memory = self._index.release(path)
        if (
            memory is not None
            and isinstance(release, ResourceRelease)
            and release.version < memory[0]
        ):
            raise Untrusted(
                f"{path}: the signed version {release.version} is older than version"
                f" {memory[0]}, verified here before",
                rule="rollback",
            )
        return release

    def _unsigned(self, path: str) -> NoReturn:
        """No publisher signed ``path``: first what the upstream would say without trust.

        A resource the upstream does not have (404), or a call it refuses (401,
        403), is that error, as on a device with trust off; only one the
        upstream has and no publisher signed is ``unsigned``. What the upstream
        answers is not used, not kept. An archive is ``unsigned`` at once: its
        key is a secret asked for only once a publisher signed the archive, and
        by the unlock's own login, not the daemon's session.
        """
        kind, _, rest = path.partition("/")
        if kind == "resources":
            folder, _, name = rest.partition("/")
            # The metadata came, the answer did not: the rule is still the answer.
            with contextlib.suppress(UpstreamUnavailable):
                self._client().get_resource(folder, name)
        raise Untrusted(f"no publisher signed a release of {path}", rule="unsigned")

    def _last_verified(
        self, path: str, exc: UpstreamUnavailable
    ) -> ResourceRelease | ArchiveRelease:
        memory = self._index.release(path)
        if memory is None:
            raise exc
        log.info("%s; deciding on the last verified release of %s", exc, path)
        try:
            target = TargetFile.from_dict(json.loads(memory[1]), path)
        except (ValueError, KeyError, TypeError):
            raise exc from None
        return _parse(target)

    def _lookup(self, path: str) -> TargetFile | None:
        with self._lock:
            updater = self._fresh()
            try:
                return updater.get_targetinfo(path)
            except Exception as exc:
                self._updater = None
                _reraise(exc)

    def _fresh(self) -> Updater:
        """The updater of a refresh at most ``trust_refresh_interval`` old. Under the lock."""
        if self.anchor.pinned() is None:
            raise Untrusted(
                "no root of trust is pinned: pin one with `coffer trust init`", rule="not-pinned"
            )
        now = self._clock()
        if self._updater is not None and now - self._refreshed_at < self._interval:
            return self._updater
        self._updater = None
        try:
            # Anchored on the root in the dir (the pinned one, or the last followed),
            # which python-tuf checks against its own threshold first.
            updater = Updater(
                str(self.anchor.dir),
                f"{self._base}/v1/tuf/",
                fetcher=UpstreamFetcher(self._base, self._client),
                config=UpdaterConfig(),
                bootstrap=None,
            )
            updater.refresh()
        except Exception as exc:
            error = translate(exc)
            self._last = {
                "at": self._wall(),
                "ok": False,
                "rule": getattr(error, "rule", None),
                "detail": printable(str(error), 300),
            }
            log.warning("trust metadata refresh failed: %s", error)
            if error is exc:
                raise
            raise error from exc
        self._last = {"at": self._wall(), "ok": True, "rule": None, "detail": None}
        self._updater, self._refreshed_at = updater, now
        return updater

    # -- the operator's and the publisher's methods ---------------------------------

    def init(self, root: str, *, replace: bool) -> dict[str, Any]:
        with self._lock:
            pinned, wiped = self.anchor.pin(root, replace=replace)
            if wiped:
                forgot = self._index.clear_releases()
                log.warning(
                    "another root of trust pinned: metadata and %d verified release(s) erased",
                    forgot,
                )
            self._updater = None
            self._last = None
        log.info("root of trust version %d pinned", pinned.version)
        return {"version": pinned.version, "key_ids": list(pinned.key_ids), "replaced": wiped}

    def status(self) -> dict[str, Any]:
        pinned = self.anchor.pinned()
        return {
            "mode": self.mode,
            "root": None
            if pinned is None
            else {"version": pinned.version, "key_ids": list(pinned.key_ids)},
            "last_refresh": self._last,
            "roles": self.anchor.roles(),
        }

    def metadata(self, role: str) -> dict[str, Any]:
        """The verified top-level targets and the current text of delegated ``role``."""
        _check_role(role)
        with self._lock:
            self._refreshed_at = float("-inf")  # a publisher signs over the newest
            updater = self._fresh()
            targets_path = self.anchor.dir / "targets.json"
            targets = Metadata[Targets].from_bytes(targets_path.read_bytes())
            delegations = targets.signed.delegations
            # The role's version as the snapshot this refresh verified (and
            # python-tuf persisted) names it; None: never published, the first
            # publisher signs version 1.
            snapshot = Metadata[Snapshot].from_bytes(
                (self.anchor.dir / "snapshot.json").read_bytes()
            )
            listed = snapshot.signed.meta.get(f"{role}.json")
            text = None
            if (
                delegations is not None
                and delegations.roles is not None
                and role in delegations.roles
                and listed is not None
            ):
                try:
                    # A lookup of a path the role covers makes python-tuf fetch the
                    # role and check it against snapshot and the delegation's keys.
                    updater.get_targetinfo(_covered_path(delegations.roles[role]))
                    text = (self.anchor.dir / f"{quote(role, '')}.json").read_text("utf-8")
                except UnsignedMetadataError:
                    # Signed by a key the delegation no longer names (revoked): none
                    # of it is handed on; the next publisher starts the role afresh
                    # after the snapshot's version.
                    self._updater = None
                except Exception as exc:
                    self._updater = None
                    _reraise(exc)
            return {
                "targets": targets_path.read_text("utf-8"),
                "role": text,
                "role_version": None if listed is None else listed.version,
            }

    def publish(self, role: str, metadata: str) -> dict[str, Any]:
        """PUT a publisher's signed ``role`` to the upstream; its answer."""
        _check_role(role)
        body = metadata.encode("utf-8")
        if len(body) > MAX_METADATA_BYTES:
            raise BadRequest(f"the metadata is over {MAX_METADATA_BYTES} bytes")
        what = f"publish of role {role}"
        with self._client().exchange(
            "PUT",
            f"/v1/tuf/roles/{quote(role, '')}",
            auth=True,
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            status = resp.status_code
            if status in (400, 403, 409):
                detail = _detail(resp)
                kind = {400: BadRequest, 403: Forbidden, 409: Conflict}[status]
                raise kind(f"{what}: the upstream refused it: {detail}")
            if status == 404:
                raise NotFound(f"{what}: the upstream has no such role")
            raise_for_status(resp, what)
            answer = json_body(resp, what)
        with self._lock:
            self._updater = None  # the next load sees the new release
        version = answer.get("version") if isinstance(answer, dict) else None
        if type(version) is not int:
            version = None
        return {"role": role, "version": version}


def _reraise(exc: Exception) -> NoReturn:
    error = translate(exc)
    if error is exc:
        raise exc
    raise error from exc


def _parse(target: TargetFile) -> ResourceRelease | ArchiveRelease:
    try:
        return parse_target(target)
    except ReleaseFormatError as exc:
        raise Untrusted(f"{target.path}: {exc}", rule="digest") from None


def _covered_path(delegated: DelegatedRole) -> str:
    """A target path ``delegated`` covers (its first pattern, wildcards filled)."""
    for pattern in delegated.paths or ():
        path = pattern.replace("*", "x").replace("?", "x")
        if delegated.is_delegated_path(path):
            return path
    raise BadRequest(f"role {delegated.name} covers no path by pattern")


def _check_role(role: str) -> None:
    if not _ROLE.fullmatch(role) or role in _TOP_LEVEL:
        raise BadRequest("role must name a delegated role (letters, digits, '.', '_', '-')")


def _detail(resp: Any) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return printable(detail, 200) if isinstance(detail, str) else f"HTTP {resp.status_code}"
