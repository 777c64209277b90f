"""uvicorn's h11 protocol with a deadline on each request's head.

uvicorn times out a kept-alive connection only while it sends nothing, and a
new connection not at all: a client dribbling a byte every few seconds
(slowloris) would hold its connection for ever. Here each request's head
(request line and headers) must arrive whole within ``timeout_keep_alive``
of the connection, or of the previous response; else the connection is
closed. The body has its own bound (``web.body_chunks``). And a stop does
not wait on a download under way: it is cut, as a replica going away must.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadTimeoutH11Protocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_head_timer()  # a request under way: its head is in

    def on_response_complete(self) -> None:
        self._arm_head_timer()  # for the next request (a pipelined one disarms it)
        super().on_response_complete()
        if self.transport.is_closing():
            self._disarm_head_timer()

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # A download under way: cut it now (its client resumes it with a
            # Range, from another replica); waiting would only delay the stop.
            # abort, not close: close would wait for a stalled client to drain.
            self.transport.abort()
            return
        super().shutdown()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
