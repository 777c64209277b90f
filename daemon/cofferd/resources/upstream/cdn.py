"""Big parts at the presigned URLs the resource API hands out (the CDN).

The bearer token never goes here: these URLs are presigned and may point at a
third party. Streaming, down or up, is held to a progress rule instead of one
deadline: each window of ``timeout`` s must move ``MIN_PROGRESS`` bytes (a
resume after a cut included); the answer to a PUT must come within
``timeout`` s of its body's end. A presigned URL is a credential: no message
quotes one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator

import requests
import urllib3.exceptions

from cofferd.errors import BadRequest, CorruptData, UpstreamUnavailable
from cofferd.foreign import WatchedBody
from cofferd.resources import wire
from cofferd.resources.deadline import MIN_PROGRESS, Guard, attached, watched
from cofferd.resources.translate import check_cdn_status, describe, json_body
from cofferd.resources.upstream.transport import Transport
from cofferd.resources.wire import StoredBlob

log = logging.getLogger(__name__)

#: Bytes asked of the socket at a time when streaming a big part. A read cut
#: short loses what it had, so this is also the most a resume fetches again.
DOWNLOAD_CHUNK = 1 << 20

#: The largest multipart part size accepted (one part is held in memory while
#: it is sent); a larger offer is declined for a single PUT of the whole.
MAX_PART_SIZE = 256 << 20
#: S3's most parts of one multipart upload.
MAX_PARTS = 10_000


class Cdn:
    """Down and up the CDN for one upstream's transport."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def iter_big(self, url: str, size: int, offset: int = 0) -> Generator[bytes, None, None]:
        """Stream the big part at presigned ``url``: exactly ``size - offset`` bytes.

        A dropped connection resumes with ``Range: bytes=N-`` (bounded
        retries); more bytes than ``size`` raise :class:`CorruptData`.
        Integrity is the caller's to check (sha256, authentication).
        """
        failures = 0
        deadline = self._http.deadline()  # renewed by progress
        progress = Guard(self._http.timeout, progress=True)
        # Never ask for a range starting at the end: the CDN answers 416.
        while offset < size:
            try:
                with watched(progress):
                    for chunk in self._big_from(url, offset, size, deadline, progress):
                        offset += len(chunk)
                        failures = 0
                        deadline = self._http.deadline()
                        with progress.paused():  # the consumer's pace is not the CDN's
                            yield chunk
            except (requests.RequestException, _ServerError, _ShortRead) as exc:
                if offset == size:
                    return  # the connection failed after the last byte
                if progress.expired:
                    raise UpstreamUnavailable(
                        f"the CDN moved fewer than {MIN_PROGRESS} bytes of the big part"
                        f" in {self._http.timeout:g} s"
                    ) from None
                left = deadline - self._http.clock()
                if failures >= self._http.retry.retries or left <= 0:
                    # from None: requests' message quotes the presigned URL, a
                    # credential, and tracebacks end up in logs.
                    raise UpstreamUnavailable(
                        f"cannot fetch the big part: {describe(exc)}"
                    ) from None
                self._http.sleep(min(left, self._http.retry.delay(failures)))
                failures += 1
            else:
                return

    def _big_from(
        self, url: str, offset: int, size: int, deadline: float, progress: Guard
    ) -> Iterator[bytes]:
        # One GET from ``offset``; the caller resumes after a failure.
        # identity: byte offsets for Range and big_size count stored bytes.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        left = self._http.left(deadline, "the big part")
        with attached(progress):
            resp = self._http.session.get(
                url, headers=headers, stream=True, timeout=(left, left), allow_redirects=False
            )
        with resp:
            if resp.status_code >= 500:
                raise _ServerError(resp.status_code)
            check_cdn_status(resp, partial=offset > 0)
            for chunk in _chunks(resp):
                progress.moved(len(chunk))
                offset += len(chunk)
                if offset > size:
                    raise CorruptData("the CDN served more bytes than the big part has")
                yield chunk
        if offset < size:
            raise _ShortRead()

    def put_big(self, url: str, chunks: Iterable[bytes]) -> StoredBlob | None:
        """PUT the big part to presigned ``url`` with chunked transfer; not retried.

        What the store says it stored, when it says (the reference upstream's
        own CDN answers ``{"size", "sha256"}``); None when it answers with no
        body, as an S3 store does: the commit verifies it then.
        An exception raised by ``chunks`` itself propagates unchanged.
        """
        progress = Guard(self._http.timeout, progress=True)
        body = WatchedBody(_counted(chunks, progress, self._http.timeout))
        with body.source_errors_first():
            try:
                with watched(progress), attached(progress):
                    resp = self._http.session.put(
                        url,
                        data=body.chunks(),
                        headers={"Content-Type": "application/octet-stream"},
                        timeout=(self._http.timeout, self._http.timeout),
                        allow_redirects=False,
                    )
            except requests.RequestException as exc:
                why = describe(exc)
                if progress.expired:
                    why = f"it took fewer than {MIN_PROGRESS} bytes in {self._http.timeout:g} s"
                # from None: requests' message quotes the presigned URL.
                raise UpstreamUnavailable(f"cannot store the big part: {why}") from None
        check_cdn_status(resp, partial=False, expected=(200, 201))
        if not resp.content:
            return None
        return wire.parse_stored_blob(json_body(resp, "big part upload"))

    def put_parts(
        self, chunks: Iterable[bytes], part_size: int, part_url: Callable[[int], str]
    ) -> int:
        """PUT ``chunks`` as parts 1, 2, ... of ``part_size`` bytes (the last shorter); their count.

        One part is held in memory at a time, so a part can be sent again: a
        part whose PUT fails (connection, 5xx, or 403 from a URL that expired
        meanwhile) is retried with a fresh URL from ``part_url``, with the
        bounded backoff of :class:`RetryPolicy`. At least one part is sent,
        empty if ``chunks`` is. An exception raised by ``chunks`` itself
        propagates unchanged, before the part it was filling is sent.
        """
        if part_size > MAX_PART_SIZE:
            raise BadRequest(f"a part of {part_size} bytes is over the {MAX_PART_SIZE} held")
        part = bytearray()
        count = 0
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                room = part_size - len(part)
                part += view[:room]
                view = view[room:]
                if len(part) == part_size:
                    count += 1
                    self._put_part(count, part, part_url)
                    # A new buffer, not clear(): the sent one may still be viewed.
                    part = bytearray()
        if part or not count:
            count += 1
            self._put_part(count, part, part_url)
        return count

    def _put_part(self, number: int, part: bytearray, part_url: Callable[[int], str]) -> None:
        if number > MAX_PARTS:
            raise BadRequest(f"the big part needs more than {MAX_PARTS} parts")
        failures = 0
        deadline = self._http.deadline()
        while True:
            url = part_url(number)
            left = self._http.left(deadline, f"part {number} of the big part")
            problem: str
            try:
                # A memoryview: sent with its Content-Length, never copied.
                with self._http.session.put(
                    url, data=memoryview(part), timeout=(left, left), allow_redirects=False
                ) as resp:
                    if resp.status_code == 200:
                        return
                    if resp.status_code < 500 and resp.status_code != 403:
                        check_cdn_status(resp, partial=False)
                    problem = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                problem = describe(exc)
            left = deadline - self._http.clock()
            if failures >= self._http.retry.retries or left <= 0:
                # The presigned URL is not quoted: it is a credential.
                raise UpstreamUnavailable(f"cannot store part {number} of the big part: {problem}")
            log.debug("part %d of a big part failed (%s); retrying", number, problem)
            self._http.sleep(min(left, self._http.retry.delay(failures)))
            failures += 1


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives (``read1``: whatever one read gives), for the progress rule."""
    raw = resp.raw
    while True:
        # urllib3's errors as requests' iter_content gives them.
        try:
            chunk = raw.read1(DOWNLOAD_CHUNK)
        except urllib3.exceptions.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        if not chunk:
            return
        yield chunk


def _counted(chunks: Iterable[bytes], progress: Guard, answer_within: float) -> Iterator[bytes]:
    """An upload's body, each chunk counted once sent (when the next is asked for)."""
    source = iter(chunks)
    while True:
        with progress.paused():  # the source's pace (the publisher's input) is not the CDN's
            chunk = next(source, None)
        if chunk is None:
            break
        yield chunk
        progress.moved(len(chunk))
    progress.answer_within(answer_within)


class _ServerError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"the CDN answered HTTP {status}")


class _ShortRead(Exception):
    def __init__(self) -> None:
        super().__init__("the connection ended before the whole big part arrived")
