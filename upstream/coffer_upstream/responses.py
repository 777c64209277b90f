"""What a request handler returns: a JSON answer or a file range to stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO


@dataclass(frozen=True)
class JsonResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileResponse:
    """``count`` bytes of ``file`` from ``offset``, sent with sendfile (none for HEAD).

    The server closes ``file`` once sent.
    """

    status: int
    file: BinaryIO
    offset: int
    count: int
    headers: dict[str, str] = field(default_factory=dict)


Response = JsonResponse | FileResponse
