"""Wiring: settings in, the daemon's services and method table out.

:class:`App` holds what every method reaches through ``call.services`` (it
satisfies :class:`cofferd.rpc.dispatch.services.Services`): the settings, the one API
client, the device index, the managed cache, the offline-use service (field),
the notifier and the unlock workflow. Nothing here
reads the environment; ``main()`` builds the settings and the notifier and
passes them. The method table is built inside ``rpc/``
(:data:`cofferd.rpc.table.TABLE`); this module only hands it to the dispatcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import requests

from cofferd.errors import StateUnwritable
from cofferd.field.clock import TrustedClock
from cofferd.field.credentials import CredentialError, read_device_key
from cofferd.field.enrollment import Enrollment
from cofferd.field.identity import IdentityState, load_identity
from cofferd.field.loads import Loads
from cofferd.field.login import BootLogin
from cofferd.field.offline import Field
from cofferd.field.records import RecordStore
from cofferd.field.sealing import Sealer
from cofferd.notify import Notifier
from cofferd.observe.audit import AuditLog
from cofferd.observe.calllog import CallLog
from cofferd.observe.metrics import Registry, coffer_registry
from cofferd.resources.cache import BigPartCache
from cofferd.resources.index import INDEX_NAME, Index
from cofferd.resources.managed import ManagedCache
from cofferd.resources.segments import SignedSegments, fetch_manifest
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.dispatch.dispatcher import Dispatcher
from cofferd.rpc.dispatch.observer import CallObserver
from cofferd.rpc.table import TABLE
from cofferd.settings import Settings
from cofferd.trust.service import Trust
from cofferd.unlock import UnlockWorkflow

log = logging.getLogger(__name__)


class App:
    """The daemon's services, shared by every call."""

    def __init__(self, settings: Settings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.cache = BigPartCache(settings.cache_dir)
        self.index = Index(settings.state_dir / INDEX_NAME)
        self.managed = ManagedCache(
            self.cache,
            self.index,
            _Cdn(self.api_client),
            max_bytes=settings.cache_max_bytes,
            min_free_bytes=settings.cache_min_free_bytes,
        )
        self.metrics: Registry = coffer_registry()
        self.metrics.on_collect(self._collect)
        # The check and the build under one lock: two first calls at once must
        # not build two clients, one of them missing the other's login.
        self._client_lock = threading.Lock()
        self._client: ApiClient | None = None
        # The unlock logs in with the credentials it was given on a session of
        # its own, dropped when its worker ends: the daemon's login is changed
        # only by `login` (and the boot credential).
        #: Which releases a publisher signed (docs/trust.md).
        self.trust = Trust(
            mode=settings.trust,
            refresh_interval=settings.trust_refresh_interval,
            state_dir=settings.state_dir,
            upstream_url=settings.upstream_url,
            index=self.index,
            client=self.api_client,
        )
        self.unlock = UnlockWorkflow.from_settings(
            settings, self.new_api_client, notifier, trust=self.trust
        )
        #: The device's own key pair (cofferd.field.identity), read once at start.
        self.identity: IdentityState = load_identity(settings.credentials_dir)
        #: Whether that key is enrolled with the upstream, as which device.
        self.enrollment = Enrollment(
            settings.state_dir, self.identity, settings.upstream_url, settings.credentials_dir
        )
        self.boot_login = BootLogin(
            settings.credentials_dir, settings.login_credential, self.enrollment.credential
        )
        self.field = _build_field(settings, self.index, self.api_client)
        _cache_under_trust(settings, self.index, self.managed)
        self.loads = Loads(self.field, self.managed, self.trust)
        self.boot_login.start(self.api_client)
        self.enrollment.start(self.api_client, self.enrolled)

    def enrolled(self) -> None:
        """The device just enrolled: its own identity replaces a boot credential's login.

        A person's ``login`` call stays in use (it wins until ``logout``). A
        change of identity erases the records the previous one obtained.
        """
        if self.boot_login.source == "login call":
            return
        client = self.api_client()
        before = client.subject
        client.logout()
        after = client.subject  # the device's, taken at once
        if before is not None and before != after:
            self.field.forget()

    def new_api_client(self) -> ApiClient:
        """A fresh API client with no login, for one unlock's own upstream session."""
        return ApiClient(self.settings.upstream_url, timeout=self.settings.upstream_timeout)

    def api_client(self) -> ApiClient:
        """The process's one API client for ``settings.upstream_url``, built on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = ApiClient(
                    self.settings.upstream_url,
                    timeout=self.settings.upstream_timeout,
                    credential_source=self.boot_login.credential,
                    observer=_Contact(self.field, self._upstream_contact),
                )
            return self._client

    def _upstream_contact(self, answered: bool) -> None:
        self.metrics.set("coffer_upstream_reachable", 1 if answered else 0)
        if answered:
            self.metrics.set("coffer_upstream_last_contact_timestamp_seconds", time.time())

    def _collect(self, registry: Registry) -> None:
        registry.set("coffer_cache_bytes", self.index.total_size())
        expiries = [r.lease_expires for r in self.index.records() if r.lease_expires is not None]
        if expiries:
            registry.set("coffer_lease_earliest_expiry_timestamp_seconds", min(expiries))

    def close(self) -> None:
        """Close the API client (daemon shutdown); a later use builds a new one."""
        self.boot_login.stop()
        self.enrollment.stop()
        self.field.close()
        with self._client_lock:
            if self._client is not None:
                self._client.close()
            self._client = None


class _Cdn:
    """The managed cache's CDN source: the process's API client, whichever it is now."""

    def __init__(self, client: Callable[[], ApiClient]) -> None:
        self._client = client

    def iter_big(self, url: str, size: int, offset: int = 0) -> Iterator[bytes]:
        return self._client().iter_big(url, size, offset)

    def manifest(self, folder: str, name: str, signed: SignedSegments) -> bytes:
        return fetch_manifest(self._client(), folder, name, signed)


class _Contact:
    """The API client's observer: the field hears every exchange, the metrics its outcome."""

    def __init__(self, field: Field, reachable: Callable[[bool], None]) -> None:
        self._field = field
        self._reachable = reachable

    def answered(self, resp: requests.Response) -> None:
        self._field.answered(resp)
        self._reachable(resp.status_code < 500)

    def failed(self, exc: BaseException) -> None:
        self._field.failed(exc)
        self._reachable(False)


#: The index's note of whether every cached big part was checked against a signed manifest.
_CACHE_TRUST = "cache_trust"


def _cache_under_trust(settings: Settings, index: Index, managed: ManagedCache) -> None:
    """Warn when trust is off; drop what landed unchecked when it is required again.

    A warm load trusts a cached entry because it was checked chunk by chunk
    when it landed; an entry that landed while trust was off was not, so it
    goes (one download each) the first time cofferd starts with trust required.
    """
    try:
        if settings.trust == "off":
            log.warning(
                "trust is off: cofferd delivers whatever the upstream serves, signed or not"
            )
            if index.get_meta(_CACHE_TRUST) != "unchecked":
                index.set_meta(_CACHE_TRUST, "unchecked")
            return
        if index.get_meta(_CACHE_TRUST) != "checked":
            entries = index.entries()
            for entry in entries:
                managed.drop_entry(entry)
            if entries:
                log.warning(
                    "trust is required: %d cached big part(s) that landed unchecked removed",
                    len(entries),
                )
            index.set_meta(_CACHE_TRUST, "checked")
    except StateUnwritable as exc:
        log.error("cannot note the cache's trust state: %s", exc)  # noqa: TRY400


def _build_field(settings: Settings, index: Index, client: Callable[[], ApiClient]) -> Field:
    try:
        key = read_device_key(settings.credentials_dir, settings.device_key_credential)
    except CredentialError as exc:
        log.error("%s; offline records are kept in memory only", exc)  # noqa: TRY400
        key = None
    if key is None:
        log.warning("no device key: offline records are kept in memory only (lost at restart)")
    offset = settings.clock_offset
    clock = TrustedClock(index, max_skew=settings.max_clock_skew, wall=lambda: time.time() + offset)
    store = RecordStore(index, Sealer(key) if key is not None else None)
    return Field(
        client,
        store,
        clock,
        lease_public_keys=settings.lease_public_keys,
        decide_within=settings.upstream_timeout,
    )


def build_dispatcher(
    settings: Settings,
    *,
    call_log: CallLog | None = None,
    journal: AuditLog | None = None,
    registry: Registry | None = None,
) -> Dispatcher:
    """The dispatcher over the method table, its calls logged, counted and audited,
    its operator's methods open to the uids of ``login_uids`` alone."""
    observer = CallObserver(TABLE, call_log=call_log, journal=journal, registry=registry)
    return Dispatcher(TABLE, observer, operators=settings.allowed_login_uids())
