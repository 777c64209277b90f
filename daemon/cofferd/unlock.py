"""The unlock workflow: decrypt the device's image archive straight into Docker.

``idle → authenticating → downloading_key → decrypting → loading_images →
ready``, or ``error`` with a message a person can act on; every change goes
through :func:`cofferd.models.check_transition`, so a change the table does
not allow raises. ``decrypting`` lasts while the verified tar streams into the
engine's image load; ``loading_images`` once the whole tar is through and the
engine imports it.

Invariants:

- One unlock at a time: :meth:`UnlockWorkflow.start` checks and starts the
  worker under one lock, so two calls cannot both pass the check (the spec's
  window between check and start is closed).
- No plaintext tar on disk, ever: the verified plaintext goes from the
  decryptor to the engine's socket chunk by chunk.
- A tampered or truncated archive never ends in ``ready``: the decryptor
  releases only verified segments, and when one fails the request body is cut
  before its end, so the engine discards the load. Images of this archive that
  appeared anyway are removed.
- Credentials and the archive key live in the worker's frames only; no log
  line, error or file gets them. The upstream session is the unlock's own
  (a fresh client from ``api_client``), closed and dropped as soon as the key
  is fetched: the daemon's shared login is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from coffer.atomic import atomic_file
from cofferd.binary_split import archive
from cofferd.binary_split.archive import ArchiveHeader, ManifestImage, ManifestReader
from cofferd.binary_split.stream import archive_associated_data
from cofferd.docker_engine import DockerEngine
from cofferd.errors import (
    Conflict,
    DecryptionError,
    DockerRefused,
    DockerUnavailable,
    NotFound,
    ShuttingDown,
    Untrusted,
    wire_code,
)
from cofferd.models import UNLOCK_RUNNING, UnlockState, check_transition
from cofferd.settings import Settings
from cofferd.trust.release import ArchiveRelease, key_commitment

log = logging.getLogger(__name__)

#: The file in ``settings.state_dir`` that remembers what the last unlock loaded.
RECORD_NAME = "unlock.json"
#: Seconds between two progress lines sent to systemd's ``STATUS=``.
STATUS_INTERVAL = 1.0
#: Seconds the background check of the engine after a restart may take.
ENGINE_CHECK_TIMEOUT = 30.0
_STATUS_PART = "unlock"


class KeySource(Protocol):
    """What the workflow needs of the upstream API client."""

    def login(self, email: str, password: str) -> None: ...

    def get_archive_key(self, archive_id: str) -> bytes: ...


class StatusSink(Protocol):
    """Where progress goes for systemd (:class:`cofferd.notify.Notifier`)."""

    def set_status(self, part: str, text: str | None) -> None: ...


class ArchiveTrust(Protocol):
    """The trust decision the workflow asks first (:class:`cofferd.trust.service.Trust`)."""

    def archive_release(self, archive_id: str) -> ArchiveRelease | None: ...

    def verified(self, release: ArchiveRelease) -> None: ...


@dataclass(frozen=True)
class _Progress:
    state: UnlockState = UnlockState.IDLE
    error: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    images: tuple[str, ...] = ()


class UnlockWorkflow:
    """One device's unlock: started by ``unlock``, watched by ``unlock_status``."""

    def __init__(
        self,
        settings: Settings,
        api_client: Callable[[], KeySource],
        docker_engine: Callable[[], DockerEngine],
        notifier: StatusSink,
        clock: Callable[[], float] = time.monotonic,
        check_engine: Callable[[], DockerEngine] | None = None,
        trust: ArchiveTrust | None = None,
    ) -> None:
        self._settings = settings
        self._trust = trust
        self._api_client = api_client
        self._docker_engine = docker_engine
        self._check_engine = check_engine or docker_engine
        #: Wall-clock time of the last finished engine check after a restart.
        self._engine_checked_at: float | None = None
        self._notifier = notifier
        self._clock = clock
        self._lock = threading.Lock()  # guards _now, _thread, _closed, _restore_pending
        self._now = _Progress()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._closed = False
        self._restore_pending = True
        self._restore_lock = threading.Lock()
        self._last_push = float("-inf")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        api_client: Callable[[], KeySource],
        notifier: StatusSink,
        trust: ArchiveTrust | None = None,
    ) -> UnlockWorkflow:
        """The workflow with the real engine of ``settings.docker_host``."""
        return cls(
            settings,
            api_client,
            lambda: DockerEngine.connect(settings.docker_host, settings.docker_timeout),
            notifier,
            check_engine=lambda: DockerEngine.connect(
                settings.docker_host, min(settings.docker_timeout, ENGINE_CHECK_TIMEOUT)
            ),
            trust=trust,
        )

    # -- the two methods -----------------------------------------------------

    def start(self, email: str, password: str) -> dict[str, Any]:
        """Check, then start the worker, under one lock; ``{"state": "authenticating"}``."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("cofferd is shutting down")
            if not self._settings.archive_path.is_file():
                raise NotFound("Encrypted archive not found")
            if self._now.state in UNLOCK_RUNNING:
                raise Conflict(f"an unlock is already running ({self._now.state.value})")
            self._set_locked(_Progress(UnlockState.AUTHENTICATING))
            self._restore_pending = False  # the outcome of this unlock is what counts now
            self._thread = threading.Thread(
                target=self._run, args=(email, password), name="unlock", daemon=True
            )
            self._thread.start()
            return {"state": UnlockState.AUTHENTICATING.value}

    def status(self) -> dict[str, Any]:
        """``{"state", "error", "bytes_done", "bytes_total", "images"}``."""
        self._restore()
        with self._lock:
            now = self._now
        return {
            "state": now.state.value,
            "error": now.error,
            "bytes_done": now.bytes_done,
            "bytes_total": now.bytes_total,
            "images": list(now.images),
        }

    @property
    def engine_checked_at(self) -> float | None:
        """When (Unix time) the engine was last asked for the unlocked images after a restart.

        None: not yet, or nothing to ask (no unlock recorded).
        """
        with self._lock:
            return self._engine_checked_at

    @property
    def state(self) -> UnlockState:
        """The state ``unlock_status`` would report."""
        self._restore()
        with self._lock:
            return self._now.state

    def close(self, timeout: float) -> None:
        """Cancel a running unlock and wait up to ``timeout`` s for the worker to finish."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._cancel.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the unlock worker did not stop within %.0f s", timeout)
        self._notifier.set_status(_STATUS_PART, None)

    # -- state -----------------------------------------------------------------

    def _set_locked(self, new: _Progress) -> None:
        # Caller holds self._lock.
        if new.state != self._now.state:
            check_transition(self._now.state, new.state)
            log.info("unlock: %s -> %s", self._now.state.value, new.state.value)
        self._now = new
        self._push(force=True)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._set_locked(dataclasses.replace(self._now, **changes))

    def _progress(self, done: int) -> None:
        with self._lock:
            self._now = dataclasses.replace(self._now, bytes_done=done)
            self._push(force=False)

    def _push(self, *, force: bool) -> None:
        # Caller holds self._lock; progress lines at most every STATUS_INTERVAL.
        now = self._clock()
        if not force and now - self._last_push < STATUS_INTERVAL:
            return
        self._last_push = now
        self._notifier.set_status(_STATUS_PART, _status_line(self._now))

    # -- the worker ------------------------------------------------------------

    def _run(self, email: str, password: str) -> None:
        try:
            images = self._unlock(email, password)
        except Exception as exc:
            # The wire table names the error, as a call failing with it would be named.
            row = wire_code(exc)
            if row is None:
                log.exception("unlock failed unexpectedly")
                message = "Internal error: cofferd failed unexpectedly; its log has the details"
            else:
                message = f"{row[1]}: {exc}"
            log.warning("unlock failed: %s", message)
            self._update(state=UnlockState.ERROR, error=message, images=())
        else:
            self._update(state=UnlockState.READY, images=images)

    def _unlock(self, email: str, password: str) -> tuple[str, ...]:
        path = self._settings.archive_path
        try:
            src = path.open("rb")
        except OSError as exc:
            raise NotFound(f"cannot open the archive {path}: {exc.strerror or exc}") from exc
        with src:
            header = archive.read_header(src)
            total = os.fstat(src.fileno()).st_size
            # Decide first: the archive a publisher signed, before any key is asked for.
            release = (
                None if self._trust is None else self._trust.archive_release(header.archive_id)
            )
            if release is not None:
                _check_file(src, release, total)
            client = self._api_client()
            try:
                client.login(email, password)
                self._update(state=UnlockState.DOWNLOADING_KEY)
                key = client.get_archive_key(header.archive_id)
            finally:
                close = getattr(client, "close", None)
                if close is not None:
                    close()  # forgets the credentials and the token
                del client
            if release is not None:
                _check_key(key, release)
                assert self._trust is not None
                self._trust.verified(release)
            self._check_cancel()
            self._update(state=UnlockState.DECRYPTING, bytes_done=header.size, bytes_total=total)
            try:
                with self._docker_engine() as engine:
                    images = self._load(engine, src, key, header)
                    tags = _check_present(engine, images)
            except DecryptionError as exc:
                raise DecryptionError(
                    f"the archive {path} is damaged or has been tampered with; nothing was loaded"
                ) from exc
        self._remember(header.archive_id, images)
        return tags

    def _load(
        self, engine: DockerEngine, src: BinaryIO, key: bytes, header: ArchiveHeader
    ) -> list[ManifestImage]:
        before = engine.image_ids()
        reader = ManifestReader()
        try:
            engine.load(self._body(src, key, header, reader))
            return reader.images()
        except BaseException:
            _remove_partial(engine, before, reader)
            raise

    def _body(
        self, src: BinaryIO, key: bytes, header: ArchiveHeader, reader: ManifestReader
    ) -> Iterator[bytes]:
        for chunk in archive.decrypt(src, key, header, on_read=self._progress):
            self._check_cancel()
            reader.feed(chunk)
            yield chunk
        # Every segment verified and the stream ended where it should: only now
        # may the body end, and the engine has all it will get.
        self._update(state=UnlockState.LOADING_IMAGES)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise ShuttingDown("cofferd is shutting down")

    # -- what the last unlock loaded, across restarts ------------------------------

    def _remember(self, archive_id: str, images: list[ManifestImage]) -> None:
        record = {
            "archive_id": archive_id,
            "images": [{"id": i.id, "tags": list(i.tags)} for i in images],
        }
        try:
            _write_atomically(self._settings.state_dir / RECORD_NAME, json.dumps(record) + "\n")
        except OSError as exc:
            # The images are loaded; only the answer after a restart suffers.
            log.warning(
                "cannot remember the unlocked images in %s: %s", self._settings.state_dir, exc
            )

    def _restore(self) -> None:
        """After a restart: ``ready`` if the archive's images are already in the engine.

        A background thread asks the engine (within ENGINE_CHECK_TIMEOUT);
        callers never wait for it and meanwhile get the state as it is (``idle``).
        """
        with self._lock:
            if not self._restore_pending or self._closed:
                return
        if not self._restore_lock.acquire(blocking=False):
            return
        threading.Thread(target=self._restore_now, name="unlock-check", daemon=True).start()

    def _restore_now(self) -> None:
        # Runs holding _restore_lock (taken by _restore), released at the end.
        try:
            with self._lock:
                if not self._restore_pending or self._now.state is not UnlockState.IDLE:
                    return
            tags = self._images_in_engine()
            with self._lock:
                if tags is None or not self._restore_pending:
                    return
                self._restore_pending = False
                if tags and self._now.state is UnlockState.IDLE:
                    self._set_locked(_Progress(UnlockState.READY, images=tags))
        finally:
            self._restore_lock.release()

    def _images_in_engine(self) -> tuple[str, ...] | None:
        """The remembered tags if all are present, () if not, None if unknown yet."""
        try:
            raw = json.loads((self._settings.state_dir / RECORD_NAME).read_text())
            images = [ManifestImage(i["id"], tuple(i["tags"])) for i in raw["images"]]
            with self._settings.archive_path.open("rb") as src:
                current = archive.read_header(src).archive_id
        except FileNotFoundError:
            return ()
        except (OSError, ValueError, KeyError, TypeError, DecryptionError) as exc:
            log.info("not restoring the unlock state: %s", exc)
            return ()
        if current != raw.get("archive_id") or not images:
            return ()
        try:
            with self._check_engine() as engine:
                return _check_present(engine, images)
        except DockerRefused:
            return ()
        except DockerUnavailable as exc:
            log.info("cannot check the engine for unlocked images yet: %s", exc)
            return None
        finally:
            # Only when the engine was asked: with no record there is nothing to check.
            with self._lock:
                self._engine_checked_at = time.time()


def _check_file(src: BinaryIO, release: ArchiveRelease, size: int) -> None:
    """The archive file is the one signed: its length and SHA-256, one pass (rule digest)."""
    if size != release.length:
        raise Untrusted(
            f"archive {release.archive_id}: its length differs from the signed", rule="digest"
        )
    position = src.tell()
    src.seek(0)
    digest = hashlib.file_digest(cast(io.BufferedReader, src), "sha256").hexdigest()
    src.seek(position)
    if not hmac.compare_digest(digest, release.sha256):
        raise Untrusted(
            f"archive {release.archive_id}: it differs from the signed file", rule="digest"
        )


def _check_key(key: bytes, release: ArchiveRelease) -> None:
    commitment = key_commitment(key, archive_associated_data(release.archive_id))
    if not hmac.compare_digest(commitment, release.key_commitment):
        raise Untrusted(
            f"archive {release.archive_id}: the key does not match the signed commitment",
            rule="key-commitment",
        )


def _check_present(engine: DockerEngine, images: list[ManifestImage]) -> tuple[str, ...]:
    """The tags (or ids, for untagged images) of ``images``, all checked present."""
    shown: list[str] = []
    for image in images:
        found = engine.find_image(image.id)
        missing = set(image.tags) - set(found.tags) if found is not None else set(image.tags)
        if found is None or missing:
            what = ", ".join(sorted(missing)) or image.id
            raise DockerRefused(f"the engine does not list {what} after the load")
        shown.extend(image.tags or (image.id,))
    return tuple(shown)


def _remove_partial(engine: DockerEngine, before: frozenset[str], reader: ManifestReader) -> None:
    """Remove images of this archive that appeared during a load that failed."""
    try:
        leftovers = (engine.image_ids() - before) & reader.candidate_ids
        for image_id in sorted(leftovers):
            log.warning("removing image %s left by the failed unlock", image_id)
            engine.remove_image(image_id)
    except (DockerRefused, DockerUnavailable) as exc:
        log.warning("cannot check the engine for a partial load: %s", exc)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(text.encode())


def _status_line(now: _Progress) -> str:
    if now.state is UnlockState.DECRYPTING and now.bytes_total:
        pct = 100 * now.bytes_done // now.bytes_total
        return f"unlock decrypting {now.bytes_done >> 20}/{now.bytes_total >> 20} MiB ({pct}%)"
    if now.state is UnlockState.ERROR:
        return f"unlock failed: {(now.error or '')[:120]}"
    return f"unlock {now.state.value}"


__all__ = ["RECORD_NAME", "KeySource", "StatusSink", "UnlockWorkflow"]
