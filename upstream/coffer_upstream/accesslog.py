"""One log line per request on stderr: client, user, method, path, status, bytes, time.

The query string stays out: it holds presigned URL signatures.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("coffer_upstream")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        sent = 0

        async def counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            client = scope.get("client")
            user = scope.get("state", {}).get("user") or "-"
            log.info(
                "%s %s %s %s %d %d %.1fms",
                client[0] if client else "-",
                user,
                scope["method"],
                repr(scope["path"])[1:-1][:300],
                status,
                sent,
                (time.monotonic() - started) * 1000,
            )
