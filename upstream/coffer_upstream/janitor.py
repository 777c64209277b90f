"""The janitor: sweeps expired uploads, old failed logins, refresh tokens and
the ``jti`` of login assertions that can no longer pass, and renews the
snapshot and timestamp of the TUF repository before they expire.

Every replica (every worker) runs one, but a sweep takes the ``janitor`` lock
first: a row in ``locks`` with an expiry, so two never sweep at once, and a
replica that died holding it blocks the others only until it expires. The
same row works on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from coffer_upstream.accounts import Accounts
from coffer_upstream.blobstore.local import LocalStore
from coffer_upstream.db import DatabaseError
from coffer_upstream.db.models import Lock
from coffer_upstream.db.session import Transactions
from coffer_upstream.devices import Devices
from coffer_upstream.trust import TrustError
from coffer_upstream.trust.repository import Repository
from coffer_upstream.uploads import Publisher

log = logging.getLogger(__name__)

#: Seconds a temp file of a PUT may go untouched before it counts as debris.
DEBRIS_IDLE = 600


class NamedLock:
    """A lock row: held by one holder until released or expired."""

    def __init__(self, transactions: Transactions, name: str, clock: Callable[[], int]) -> None:
        self._tx = transactions
        self._name = name
        self._clock = clock
        self.holder = secrets.token_hex(8)

    def acquire(self, ttl: int) -> bool:
        now = self._clock()
        try:
            with self._tx.atomic() as db:
                row = db.execute(
                    select(Lock.holder, Lock.expires_at)
                    .where(Lock.name == self._name)
                    .with_for_update()
                ).first()
                if row is None:
                    db.execute(
                        insert(Lock).values(
                            name=self._name, holder=self.holder, expires_at=now + ttl
                        )
                    )
                    return True
                if row.holder != self.holder and row.expires_at > now:
                    return False
                db.execute(
                    update(Lock)
                    .where(Lock.name == self._name)
                    .values(holder=self.holder, expires_at=now + ttl)
                )
                return True
        except IntegrityError:
            return False  # another took it first

    def release(self) -> None:
        with self._tx.atomic() as db:
            db.execute(
                update(Lock)
                .where(Lock.name == self._name, Lock.holder == self.holder)
                .values(expires_at=0)
            )


class Janitor:
    def __init__(
        self,
        transactions: Transactions,
        publisher: Publisher,
        accounts: Accounts,
        devices: Devices,
        repository: Repository,
        interval: float,
        login_window: float,
        clock: Callable[[], int],
    ) -> None:
        self._publisher = publisher
        self._accounts = accounts
        self._devices = devices
        self._repository = repository
        self._interval = interval
        self._login_window = login_window
        self._clock = clock
        self.lock = NamedLock(transactions, "janitor", clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)

    def sweep(self) -> bool:
        """One sweep if no other replica is sweeping; whether it ran."""
        # Held longer than a sweep takes; released at its end.
        if not self.lock.acquire(ttl=max(60, int(self._interval * 4))):
            return False
        try:
            now = self._clock()
            self._publisher.sweep()
            if isinstance(self._publisher.blobs, LocalStore):
                # A PUT writes its temp file as the body comes: one untouched
                # that long died with its worker.
                self._publisher.blobs.remove_debris(DEBRIS_IDLE, now)
            self._accounts.forget_login_failures(int(now - self._login_window))
            self._accounts.forget_expired_refresh_tokens(now)
            self._devices.forget_expired_jtis(now)
            try:
                if renewed := self._repository.renew():
                    log.info("renewed the TUF %s", renewed)
            except TrustError as exc:
                log.warning("could not renew the TUF snapshot and timestamp: %s", exc)
        finally:
            self.lock.release()
        return True

    def start(self) -> None:
        """A sweep every interval from now on (``serve`` runs the first before it listens)."""
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep()
            except (OSError, DatabaseError) as exc:
                log.warning("sweep failed: %s", exc)
