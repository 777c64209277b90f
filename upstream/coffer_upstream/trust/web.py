"""``/v1/tuf/...``: the metadata for any TUF client, and a publisher's PUT of its role.

- ``GET /v1/tuf/{file}``: no authentication (everything in it is public and
  signed); the bytes as stored. ``timestamp.json`` is ``no-store``: it is the
  one name whose content changes.
- ``PUT /v1/tuf/roles/{role}``: role publisher; the checks are
  :meth:`Repository.put_role`'s, each refusal mapped here to its status.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coffer_upstream.auth import PUBLISHERS, Auth
from coffer_upstream.config import ServerConfig
from coffer_upstream.errors import HttpError, bad_request, not_found
from coffer_upstream.trust import Conflict, Invalid, OnlineKeyUnknown, TrustError, Unsigned
from coffer_upstream.trust.repository import Repository
from coffer_upstream.web import answer, read_body

#: A delegated role's name (docs/upstream-protocol.md).
ROLE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: ``{version}.{role}.json``: a version is a positive integer without leading zeros.
_VERSIONED = re.compile(r"([1-9][0-9]{0,17})\.([a-z0-9][a-z0-9-]{0,63})\.json")
#: The status of each refusal, found along the exception's MRO (so order does not matter).
_STATUS: dict[type[TrustError], int] = {
    Invalid: 400,
    Unsigned: 403,
    Conflict: 409,
    OnlineKeyUnknown: 503,
}


def http_error(exc: TrustError) -> HttpError:
    status = next(_STATUS[kind] for kind in type(exc).__mro__ if kind in _STATUS)
    return HttpError(status, str(exc))


class TrustApi:
    def __init__(self, config: ServerConfig, auth: Auth, repository: Repository) -> None:
        self._config = config
        self._auth = auth
        self._repository = repository

    async def get_file(self, request: Request) -> Response:
        return await run_in_threadpool(self._get_file, request.path_params["file"])

    def _get_file(self, name: str) -> Response:
        files = self._repository.files
        if name == "timestamp.json":
            latest = files.latest("timestamp")
            data = None if latest is None else latest.data
            headers = {"Cache-Control": "no-store"}
        else:
            match = _VERSIONED.fullmatch(name)
            # timestamp.json is the only name of the timestamp (consistent snapshots).
            if match is None or match[2] == "timestamp":
                raise not_found(f"no metadata {name}")
            data = files.get(match[2], int(match[1]))
            headers = {}
        if data is None:
            raise not_found(f"no metadata {name}")
        return Response(data, 200, headers, media_type="application/json")

    async def put_role(self, request: Request) -> Response:
        await run_in_threadpool(self._auth.authorize, request, PUBLISHERS)
        role: str = request.path_params["role"]
        if ROLE_NAME.fullmatch(role) is None:
            raise bad_request("role must be 1 to 64 of a-z 0-9 -, the first a letter or a digit")
        body = await read_body(request, self._config.max_metadata_bytes, self._config.idle_timeout)
        try:
            version = await run_in_threadpool(self._repository.put_role, role, body)
        except TrustError as exc:
            raise http_error(exc) from exc
        return answer(200, {"role": role, "version": version})
