"""The API client's transport: one session, one deadline per call, bounded retries.

Every exchange with the resource API goes through :meth:`Transport.send`:
each attempt's (connect, read) timeout is what is left of the call's
deadline, the whole answer (head and body) is cut at it however the server
trickles (:mod:`cofferd.resources.deadline`), and idempotent requests are
repeated with a bounded backoff on connection errors and 5xx.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from cofferd.errors import UpstreamUnavailable
from cofferd.resources.deadline import Guard, GuardedAdapter, attached, watched
from cofferd.resources.translate import describe, never_sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent calls are repeated."""

    retries: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    # The protocol uses no cookies; refusing them keeps the shared session stateless.
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class UpstreamObserver(Protocol):
    """Told of each exchange with the resource API; must be quick and never raise."""

    def answered(self, resp: requests.Response) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


class Transport:
    """One upstream's base URL and HTTP session, and the deadline rule of its calls.

    Thread-safe: the session's only per-request mutable state, its cookie
    jar, is switched off; urllib3's connection pool is thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 32,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.sleep = sleep
        self.observer = observer
        self.session = requests.Session()
        self.session.cookies.set_policy(_NoCookies())
        adapter = GuardedAdapter(pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def deadline(self) -> float:
        """The deadline of a call starting now: ``timeout`` s from now."""
        return self.clock() + self.timeout

    def left(self, deadline: float, what: str) -> float:
        """Seconds left until ``deadline``; none left is :class:`UpstreamUnavailable`."""
        left = deadline - self.clock()
        if left <= 0:
            raise UpstreamUnavailable(
                f"no answer from the upstream for {what} within {self.timeout:g} s"
            )
        return left

    def send(
        self, method: str, path: str, *, deadline: float, login: bool = False, **kwargs: Any
    ) -> requests.Response:
        # ``login``: a POST of a login, sent again after a 503 with Retry-After
        # (the server's word that it turned the login away unprocessed: too
        # many password checks under way), as an idempotent call would be.
        idempotent = method in ("GET", "PUT", "HEAD")
        attempt = 0
        while True:
            left = self.left(deadline, f"{method} {path}")
            whole = Guard(left)  # the answer's head and body, however it trickles
            try:
                with watched(whole), attached(whole):
                    resp = self.session.request(
                        method,
                        self.base + path,
                        timeout=(left, left),
                        allow_redirects=False,
                        **kwargs,
                    )
            except requests.RequestException as exc:
                if self.observer is not None:
                    self.observer.failed(exc)
                if whole.expired:  # cut by the deadline: nothing left to retry in
                    raise UpstreamUnavailable(
                        f"upstream unreachable: the answer to {method} {path.split('?')[0]}"
                        f" timed out (not whole within {left:.3g} s)"
                    ) from None
                if (idempotent or never_sent(exc)) and attempt < self.retry.retries:
                    log.debug(
                        "upstream %s %s failed (%s); retrying",
                        method,
                        path,
                        describe(exc),
                    )
                    self.sleep(min(self.retry.delay(attempt), self.left(deadline, path)))
                    attempt += 1
                    continue
                raise UpstreamUnavailable(f"upstream unreachable: {describe(exc)}") from exc
            if self.observer is not None:
                self.observer.answered(resp)
            turned_away = login and resp.status_code == 503 and "Retry-After" in resp.headers
            if (
                resp.status_code >= 500
                and (idempotent or turned_away)
                and attempt < self.retry.retries
            ):
                log.debug("upstream %s %s answered %d; retrying", method, path, resp.status_code)
                wait = self.retry.delay(attempt)
                after = resp.headers.get("Retry-After", "")
                if after.isdigit():  # the server's hint, within our bound
                    wait = max(wait, min(float(after), self.retry.max_delay))
                resp.close()
                self.sleep(min(wait, self.left(deadline, path)))
                attempt += 1
                continue
            return resp
