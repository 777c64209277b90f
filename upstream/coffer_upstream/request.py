"""One parsed request as the endpoint functions see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from io import BufferedIOBase
from typing import Any

from coffer_upstream.bodies import Body, parse_json_object


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Message
    rfile: BufferedIOBase
    max_json_bytes: int
    #: Who the request speaks for once authenticated (for the log).
    user: str | None = None
    _body: Body | None = field(default=None, repr=False)

    def body(self) -> Body:
        if self._body is None:
            self._body = Body(self.rfile, self.headers)
        return self._body

    @property
    def body_started(self) -> bool:
        return self._body is not None

    def json(self, empty_is_object: bool = False) -> dict[str, Any]:
        """The body as a JSON object (at most ``max_json_bytes``)."""
        return parse_json_object(self.body().read(self.max_json_bytes), empty_is_object)

    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header, if there is one."""
        value = self.headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()
