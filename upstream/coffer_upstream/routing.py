"""Routing: the endpoints of protocol v1 by path pattern and method."""

from __future__ import annotations

from collections.abc import Callable

from coffer_upstream.api import Api
from coffer_upstream.cdn import Cdn
from coffer_upstream.errors import HttpError, not_found
from coffer_upstream.responses import Response

Endpoint = Callable[..., Response]


class Router:
    """Path patterns (``{param}`` segments) to endpoints by method."""

    def __init__(self) -> None:
        self._routes: list[tuple[tuple[str, ...], dict[str, Endpoint]]] = []

    def add(self, pattern: str, **methods: Endpoint) -> None:
        self._routes.append((tuple(pattern.strip("/").split("/")), methods))

    def match(self, method: str, segments: list[str]) -> tuple[Endpoint, dict[str, str]]:
        for pattern, methods in self._routes:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, segment in zip(pattern, segments, strict=True):
                if part.startswith("{"):
                    params[part[1:-1]] = segment
                elif part != segment:
                    break
            else:
                if method not in methods:
                    allowed = ", ".join(sorted(methods))
                    raise HttpError(405, "method not allowed", {"Allow": allowed})
                return methods[method], params
        raise not_found("no such endpoint")


def routes(api: Api, cdn: Cdn) -> Router:
    router = Router()
    router.add("/health", GET=api.health)
    router.add("/v1/login", POST=api.login)
    # Path segments are counted before they are matched, so a folder (3
    # segments) never matches a resource (4), whatever the names.
    router.add("/v1/resources/{folder}", GET=api.list_resources)
    router.add("/v1/resources/{folder}/{name}", GET=api.get_resource, DELETE=api.delete_resource)
    router.add("/v1/resources/{folder}/{name}/uploads", POST=api.begin_upload)
    router.add("/v1/resources/{folder}/{name}/uploads/{upload_id}/commit", POST=api.commit_upload)
    router.add("/v1/archives/{archive_id}/key", GET=api.get_archive_key, PUT=api.put_archive_key)
    router.add("/cdn/{blob_id}", GET=cdn.get, HEAD=cdn.get, PUT=cdn.put)
    return router
