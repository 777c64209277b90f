"""Password checks in a bounded pool, so a login storm cannot starve other requests.

scrypt releases the GIL, so ``workers`` threads of their own (apart from the
pool that runs the other requests' database steps) hash in parallel. At most
``queue`` more checks wait; past that a login is refused at once with
:class:`Busy` (the app answers 503 with Retry-After) instead of queueing
without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from coffer_upstream.passwords import hash_password, verify_password

T = TypeVar("T")


class Busy(Exception):
    """Too many password checks under way: retry after a second."""


class PasswordPool:
    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="scrypt")
        self._cap = workers + queue
        self._pending = 0
        self._lock = threading.Lock()

    async def verify(self, password: str, stored: str) -> bool:
        return await self._run(verify_password, password, stored)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._pending >= self._cap:
                raise Busy
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, function, *args)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
