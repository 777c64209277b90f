"""The API client: the resource API's calls, over one transport, login and CDN."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

import requests

from cofferd.errors import BadRequest, Unauthorized, UpstreamProtocolError, UpstreamUnavailable
from cofferd.names import check_name
from cofferd.resources import listing, wire
from cofferd.resources.deadline import Guard, attached, watched
from cofferd.resources.translate import describe, json_body, raise_for_status
from cofferd.resources.upstream.cdn import Cdn
from cofferd.resources.upstream.credentials import DEVICE_ID, Credentials
from cofferd.resources.upstream.tokens import Tokens, refusal_detail
from cofferd.resources.upstream.transport import RetryPolicy, Transport, UpstreamObserver
from cofferd.resources.wire import Committed, ResourceInfo, StoredBlob, UploadTicket

log = logging.getLogger(__name__)


class ApiClient:
    """Talks to one upstream: its resource API and the CDN URLs it hands out."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 32,
        credential_source: Callable[[], Credentials | None] | None = None,
        wall: Callable[[], float] = time.time,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self._http = Transport(
            base_url,
            timeout=timeout,
            retry=retry,
            clock=clock,
            sleep=sleep,
            pool_size=pool_size,
            observer=observer,
        )
        self._tokens = Tokens(self._http, credential_source=credential_source, wall=wall)
        self._cdn = Cdn(self._http)

    def close(self) -> None:
        """Close the connections and forget the credentials and the token."""
        self._tokens.logout()
        self._http.close()

    # -- the login ----------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        """Whether credentials the upstream accepted are set."""
        return self._tokens.authenticated

    @property
    def subject(self) -> str | None:
        """Whom the login in use speaks for (the email, or ``device:<id>``); None: no login.

        The boot credential or the device's key is taken first if none is held,
        so this is the identity the next call would use, accepted yet or not.
        """
        return self._tokens.subject

    def login(self, email: str, password: str) -> None:
        """Check ``email``/``password`` with the upstream and keep them for later calls.

        Refused credentials raise :class:`Unauthorized` and leave the ones set
        before in place.
        """
        self._tokens.login(email, password)

    def logout(self) -> None:
        """Forget the credentials and the token; later calls need a login again."""
        self._tokens.logout()

    def enroll(self, token: str, public_key: str, name: str | None = None) -> tuple[str, str]:
        """Register this device's ``public_key`` with enrollment ``token``: (device id, role).

        A token the upstream refuses (unknown, spent, expired) is
        :class:`Unauthorized`; the token is never quoted.
        """
        body: dict[str, str] = {"enrollment_token": token, "public_key": public_key}
        if name is not None:
            body["name"] = name
        resp = self._http.send("POST", "/v1/devices", json=body, deadline=self._http.deadline())
        if resp.status_code == 401:
            raise Unauthorized(f"the upstream refused the enrollment: {refusal_detail(resp)}")
        raise_for_status(resp, "enrollment")
        answer = json_body(resp, "enrollment")
        device_id = answer.get("device_id") if isinstance(answer, dict) else None
        role = answer.get("role") if isinstance(answer, dict) else None
        if not (isinstance(device_id, str) and DEVICE_ID.fullmatch(device_id)):
            raise UpstreamProtocolError("enrollment answer: no valid device_id")
        if not (isinstance(role, str) and DEVICE_ID.fullmatch(role)):
            raise UpstreamProtocolError("enrollment answer: no valid role")
        log.info("enrolled with the upstream as device %s (%s)", device_id, role)
        return device_id, role

    # -- the resource API ---------------------------------------------------

    def get_resource(self, folder: str, name: str, version: int | None = None) -> ResourceInfo:
        """``folder/name``'s current version, or ``version`` (the one a publisher signed)."""
        check_name(folder, "folder")
        check_name(name, "name")
        query = "" if version is None else f"?version={int(version)}"
        body = self._api(
            "GET", f"/v1/resources/{folder}/{name}{query}", f"resource {folder}/{name}"
        )
        return wire.parse_resource(body, folder, name)

    def begin_upload(self, folder: str, name: str) -> UploadTicket:
        check_name(folder, "folder")
        check_name(name, "name")
        path = f"/v1/resources/{folder}/{name}/uploads"
        return wire.parse_ticket(self._api("POST", path, f"upload of {folder}/{name}", json={}))

    def commit_upload(
        self,
        folder: str,
        name: str,
        upload_id: str,
        *,
        small: bytes,
        key: bytes,
        big_size: int,
        big_sha256: str,
        plaintext_size: int,
        segment_size: int | None = None,
        segments: bytes | None = None,
    ) -> Committed:
        """Make the upload the next version; ``segments``: the big part's manifest (trust.md)."""
        check_name(folder, "folder")
        check_name(name, "name")
        body: dict[str, Any] = {
            "small": wire.b64encode(small),
            "key": wire.b64encode(key),
            "big_size": big_size,
            "big_sha256": big_sha256,
            "plaintext_size": plaintext_size,
        }
        if segments is not None:
            body["segment_size"] = segment_size
            body["segments"] = wire.b64encode(segments)
        path = f"/v1/resources/{folder}/{name}/uploads/{upload_id}/commit"
        answer = self._api("POST", path, f"commit of {folder}/{name}", json=body)
        return wire.parse_committed(answer, folder, name)

    def put_archive_key(self, archive_id: str, key: bytes) -> bool:
        """Register ``key`` for ``archive_id``; True if new, False if already so registered.

        A different key already registered raises :class:`Conflict`.
        """
        check_name(archive_id, "archive id")
        if len(key) != wire.KEY_SIZE:
            raise BadRequest(f"an archive key is {wire.KEY_SIZE} bytes")
        status, _ = self._api_status(
            "PUT",
            f"/v1/archives/{archive_id}/key",
            f"key of archive {archive_id}",
            json={"key": wire.b64encode(key)},
        )
        return status == 201

    def get_archive_key(self, archive_id: str) -> bytes:
        check_name(archive_id, "archive id")
        body = self._api("GET", f"/v1/archives/{archive_id}/key", f"key of archive {archive_id}")
        return wire.parse_archive_key(body, archive_id)

    def list_page(
        self, folder: str, cursor: str | None = None, limit: int = listing.PAGE_LIMIT
    ) -> tuple[list[listing.Listed], str | None]:
        """One page of ``folder``'s listing and the cursor of the next (None: the last)."""
        check_name(folder, "folder")
        query = urlencode({"limit": limit, **({"cursor": cursor} if cursor else {})})
        body = self._api("GET", f"/v1/resources/{folder}?{query}", f"listing of {folder}")
        return listing.parse_page(body)

    def _api(self, method: str, path: str, what: str, json: Any = None) -> Any:
        return self._api_status(method, path, what, json=json)[1]

    def _api_status(self, method: str, path: str, what: str, json: Any = None) -> tuple[int, Any]:
        deadline = self._http.deadline()
        for attempt in (1, 2):
            token = self._tokens.current(deadline)
            headers = {"Authorization": f"Bearer {token}"}
            resp = self._http.send(method, path, json=json, headers=headers, deadline=deadline)
            if resp.status_code == 401 and attempt == 1:
                log.info("the upstream refused the token; logging in again")
                self._tokens.drop(token)
                continue
            raise_for_status(resp, what)
            return resp.status_code, json_body(resp, what)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def exchange(
        self, method: str, path: str, *, auth: bool, **kwargs: Any
    ) -> Iterator[requests.Response]:
        """One exchange outside the resource API's answers (trust metadata, manifests).

        The response comes streamed, status unchecked; its body is read inside
        the block, which one deadline (``timeout``) covers whole. A transport
        failure is :class:`UpstreamUnavailable`, so the offline path applies.
        """
        deadline = self._http.deadline()
        extra = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            headers = dict(extra)
            token = self._tokens.current(deadline) if auth else None
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            left = self._http.left(deadline, f"{method} {path.split('?')[0]}")
            whole = Guard(left)
            try:
                with watched(whole):
                    with attached(whole):
                        resp = self._http.session.request(
                            method,
                            self._http.base + path,
                            headers=headers,
                            timeout=(left, left),
                            allow_redirects=False,
                            stream=True,
                            **kwargs,
                        )
                    if self._http.observer is not None:
                        self._http.observer.answered(resp)
                    with resp:
                        if resp.status_code == 401 and token is not None and attempt == 1:
                            self._tokens.drop(token)
                            continue
                        yield resp
                        return
            except requests.RequestException as exc:
                if self._http.observer is not None:
                    self._http.observer.failed(exc)
                raise UpstreamUnavailable(f"upstream unreachable: {describe(exc)}") from None

    # -- the CDN (cdn.py) -----------------------------------------------------

    def iter_big(self, url: str, size: int, offset: int = 0) -> Generator[bytes, None, None]:
        """See :meth:`Cdn.iter_big`."""
        return self._cdn.iter_big(url, size, offset)

    def put_big(self, url: str, chunks: Iterable[bytes]) -> StoredBlob | None:
        """See :meth:`Cdn.put_big`."""
        return self._cdn.put_big(url, chunks)

    def put_parts(
        self, chunks: Iterable[bytes], part_size: int, part_url: Callable[[int], str]
    ) -> int:
        """See :meth:`Cdn.put_parts`."""
        return self._cdn.put_parts(chunks, part_size, part_url)

    def part_url(self, folder: str, name: str, upload_id: str, part_number: int) -> str:
        """A presigned PUT for part ``part_number`` of a multipart upload (extension)."""
        check_name(folder, "folder")
        check_name(name, "name")
        path = f"/v1/resources/{folder}/{name}/uploads/{upload_id}/parts"
        what = f"part {part_number} of the upload of {folder}/{name}"
        return wire.parse_part_url(self._api("POST", path, what, json={"part_number": part_number}))
