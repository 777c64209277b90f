"""The one decision of a load: the upstream's answer now, or an offline record.

:meth:`Field.resolve` is the first step of every load and pull
(:mod:`cofferd.field.loads`): which version, and whether from an offline
record. Online, a valid lease makes it store (or replace) the resource's
record; an upstream "no" (401, 403, 404) erases the record at once.
When the upstream is unreachable it serves from the record if every rule
allows: a record that opens, a lease signed by a pinned key about exactly
what the record holds, a clock not set back, not offline longer than the lease
allows. Otherwise :class:`OfflineRefused` says which rule. That an offline
load is served from the cache only is the read's rule, checked there once
(:meth:`cofferd.resources.managed.ManagedCache.reading`).

Records are bound to the identity that obtained them: a lease names it
(``sub``: the email of a person's login, ``device:<id>`` for a device), a
record is kept only when its lease names the identity the call was made
under, and served offline only under that same identity (another login's
records are not; ``logout`` and a change of identity erase them all). An
identity generation, bumped under the records' lock by every erasure, is
checked under it before a record is written: the late answer to a call made
before a ``logout`` (a stalled upstream) writes nothing.

With a record at hand it does not wait out the API client's retries: the
online call runs on a worker, and the first failed exchange (a refused
connection at once; a timeout after one ``upstream_timeout``) decides for the
record; the worker's late answer still updates or erases the record.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from cofferd.errors import (
    NotFound,
    OfflineRefused,
    StateUnwritable,
    Unauthorized,
    UpstreamUnavailable,
)
from cofferd.field.clock import TrustedClock
from cofferd.field.lease import LeaseInvalid, check_matches, pinned_keys, verify
from cofferd.field.records import Held, RecordStore
from cofferd.field.sealing import RecordUnreadable
from cofferd.resources.translate import describe
from cofferd.resources.upstream import ApiClient
from cofferd.resources.wire import ResourceInfo
from cofferd.trust.checks import check_answer
from cofferd.trust.release import ResourceRelease

log = logging.getLogger(__name__)


class Field:
    """Offline decisions, records and what ``status`` says of them."""

    def __init__(
        self,
        client: Callable[[], ApiClient],
        store: RecordStore,
        clock: TrustedClock,
        *,
        lease_public_keys: Sequence[str] = (),
        decide_within: float = 30.0,
    ) -> None:
        self._client = client
        self.store = store
        self.clock = clock
        self._keys = pinned_keys(lease_public_keys)
        self._decide_within = decide_within
        self._cond = threading.Condition()
        self._failures = 0
        self.reachable: bool | None = None
        self._last_failure = "no answer"
        self.last_served_offline: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="online")
        #: Guards record writes against erasures; ``_generation`` counts the erasures
        #: of every record (logout, a change of identity).
        self._records_lock = threading.Lock()
        self._generation = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def enabled(self) -> bool:
        """Offline use needs at least one pinned lease key."""
        return bool(self._keys)

    # -- the API client's observer --------------------------------------------

    def answered(self, resp: requests.Response) -> None:
        if resp.status_code >= 500:
            self.failed(None)
            return
        self.reachable = True
        date = resp.headers.get("Date")
        upstream_time = None
        if date:
            try:
                upstream_time = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                upstream_time = None
        self.clock.contact(upstream_time)

    def failed(self, exc: BaseException | None) -> None:
        what = "it answered 5xx" if exc is None else describe(exc)
        with self._cond:
            self._last_failure = what
            self.reachable = False
            self._failures += 1
            self._cond.notify_all()

    # -- the decision -----------------------------------------------------------

    def resolve(
        self, folder: str, name: str, release: ResourceRelease | None = None
    ) -> tuple[ResourceInfo, bool]:
        """``(info, offline)`` for a load of ``folder/name``.

        With ``release`` (the one a publisher signed, decided first) the
        upstream is asked for that version, and the answer, or the offline
        record, must match it field by field (:func:`check_answer`) before it
        is kept or used: nothing unsigned reaches a record or a read.
        """
        if not self.enabled:
            return self._checked(
                self._client().get_resource(folder, name, _version(release)), release
            ), False
        if not self.store.exists(folder, name):
            try:
                return self._online(folder, name, release), False
            except UpstreamUnavailable as exc:
                raise OfflineRefused(
                    f"{exc}; offline use of {folder}/{name} refused: no record of it"
                    " (never loaded with a lease, or erased)"
                ) from exc
        with self._cond:
            start = self._failures
        future = self._pool.submit(self._online, folder, name, release)
        future.add_done_callback(lambda _: self._wake())
        with self._cond:
            self._cond.wait_for(
                lambda: future.done() or self._failures > start, timeout=self._decide_within
            )
        if future.done():
            try:
                return future.result(), False
            except UpstreamUnavailable as exc:
                return self._checked(self._offline(folder, name, str(exc)), release), True
        with self._cond:
            why = (
                f"no answer within {self._decide_within:g} s"
                if self._failures == start
                else self._last_failure
            )
        info = self._offline(folder, name, f"the upstream is unreachable ({why})")
        return self._checked(info, release), True

    @staticmethod
    def _checked(info: ResourceInfo, release: ResourceRelease | None) -> ResourceInfo:
        if release is not None:
            check_answer(info, release)
        return info

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _online(self, folder: str, name: str, release: ResourceRelease | None) -> ResourceInfo:
        client = self._client()
        with self._records_lock:
            generation = self._generation
        subject = client.subject
        try:
            info = self._checked(client.get_resource(folder, name, _version(release)), release)
        except (Unauthorized, NotFound) as exc:
            # Without credentials the "no" is ours, not the upstream's; a
            # device's key is always there, so a "no" to it is the upstream's
            # (a revoked device, after a restart too).
            said = client.authenticated or (subject or "").startswith("device:")
            if said and self._erase(folder, name):
                log.warning("erased the offline record of %s/%s: %s", folder, name, exc)
            raise
        self._remember(info, subject, generation)
        return info

    def _remember(self, info: ResourceInfo, subject: str | None, generation: int) -> None:
        if info.lease is None:
            return
        try:
            lease = verify(info.lease, self._keys)
            check_matches(
                lease,
                folder=info.folder,
                name=info.name,
                version=info.version,
                key=info.key,
                small=info.small,
                big_sha256=info.big_sha256,
                big_size=info.big_size,
            )
        except LeaseInvalid as exc:
            log.warning("%s/%s not kept for offline use: %s", info.folder, info.name, exc)
            self._erase(info.folder, info.name)
            return
        self.clock.trust(lease.iat)
        if subject is None or not same_subject(lease.sub, subject):
            log.warning(
                "%s/%s not kept for offline use: its lease is not about the identity in use",
                info.folder,
                info.name,
            )
            self._erase(info.folder, info.name)
            return
        # The load serves without it: the record is only for later offline use.
        with self._records_lock, contextlib.suppress(StateUnwritable):
            if self._generation != generation:
                log.info(
                    "%s/%s not kept: the records were erased while it was asked for",
                    info.folder,
                    info.name,
                )
                return
            self.store.put(Held.of(info, info.lease), float(lease.exp))

    def _erase(self, folder: str, name: str) -> bool:
        """Erase a record the upstream no longer backs; an unwritable index keeps it, loudly."""
        try:
            return self.store.delete(folder, name)
        except StateUnwritable:
            log.error(  # noqa: TRY400 (no traceback: the message says it)
                "cannot erase the offline record of %s/%s: the index is read-only", folder, name
            )
            return False

    def _offline(self, folder: str, name: str, why: str) -> ResourceInfo:
        refused = f"{why}; offline use of {folder}/{name} refused"
        try:
            held = self.store.get(folder, name)
        except RecordUnreadable as exc:
            log.error("%s", exc)  # noqa: TRY400 (no traceback: the message says it)
            raise OfflineRefused(f"{refused}: {exc}") from None
        if held is None:
            raise OfflineRefused(f"{refused}: no record of it (erased meanwhile)")
        try:
            lease = verify(held.lease, self._keys)
            check_matches(
                lease,
                folder=folder,
                name=name,
                version=held.version,
                key=held.key,
                small=held.small,
                big_sha256=held.big_sha256,
                big_size=held.big_size,
            )
            self.clock.check(float(lease.exp))
        except (LeaseInvalid, OfflineRefused) as exc:
            raise OfflineRefused(f"{refused}: {exc}") from None
        subject = self._client().subject
        if subject is None:
            raise OfflineRefused(f"{refused}: no login is in use (logged out)")
        if not same_subject(lease.sub, subject):
            raise OfflineRefused(f"{refused}: its lease was given to another identity")
        info = held.info()
        log.info(
            "serving %s/%s version %d offline, lease until %s",
            folder,
            name,
            held.version,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease.exp)),
        )
        self.last_served_offline = time.time()
        return info

    # -- status and logout ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "upstream_reachable": self.reachable,
            "mode": "offline" if self.reachable is False else "online",
            "last_contact": self.clock.last_contact,
            "trusted_time": self.clock.high_water_mark,
            "offline_enabled": self.enabled,
            "records_persistent": self.store.persistent,
            "records": [
                {
                    "folder": s.folder,
                    "filename": s.name,
                    "version": s.version,
                    "lease_expires": s.lease_expires,
                }
                for s in self.store.summaries()
            ],
        }

    def forget(self) -> int:
        """Erase every record (logout, a change of identity); how many there were.

        Answers to calls made before it keep nothing (the generation)."""
        with self._records_lock:
            self._generation += 1
            n = self.store.clear()
        log.info("erased %d offline record(s)", n)
        return n


def _version(release: ResourceRelease | None) -> int | None:
    return None if release is None else release.version


def same_subject(lease_sub: str, subject: str) -> bool:
    """Whether a lease's ``sub`` names ``subject`` (an email's case aside)."""
    if lease_sub.startswith("device:") or subject.startswith("device:"):
        return lease_sub == subject
    return lease_sub.casefold() == subject.casefold()
