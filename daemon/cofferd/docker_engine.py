"""The Docker boundary: the few Docker Engine API calls the unlock needs.

Every docker SDK and requests exception is translated here into
:class:`cofferd.errors.DockerUnavailable` (the engine cannot be reached) or
:class:`cofferd.errors.DockerRefused` (it answered and said no), with
``raise ... from exc``; nothing above this module imports ``docker``.

The image load streams: :meth:`DockerEngine.load` hands the SDK a generator,
which requests sends as a chunked body, and the engine reads it as it comes.
The terminating zero-length chunk goes out only after the generator ends
normally. If it raises, urllib3 closes the connection without that chunk, the
engine's tar reader sees an unexpected EOF and the load fails: the engine never
commits an image from a body that did not end. Any error the generator raises
(a :class:`cofferd.errors.DecryptionError`, :class:`cofferd.errors.ShuttingDown`)
comes out of :meth:`load` unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import docker
import docker.errors
import requests

from cofferd.errors import DockerRefused, DockerUnavailable
from cofferd.foreign import WatchedBody, printable

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class ImageInfo:
    """An image as the engine lists it."""

    id: str
    tags: tuple[str, ...]


#: Seconds a quick call (version, list, inspect, remove) may wait on the engine.
CALL_TIMEOUT = 60.0


class DockerEngine:
    """One client of one Docker engine. Not shared between threads."""

    def __init__(self, client: docker.DockerClient, load_timeout: float) -> None:
        self._client = client
        self._load_timeout = load_timeout

    @classmethod
    def connect(
        cls, host: str | None, load_timeout: float, call_timeout: float = CALL_TIMEOUT
    ) -> DockerEngine:
        """A client of the engine at ``host`` (None: the SDK's default socket).

        ``load_timeout`` bounds each wait on the engine's socket during an image
        load, when importing a big archive can keep the engine silent for long
        (``settings.docker_timeout``); other calls get ``call_timeout``, so a
        hung engine shows soon. Asking the engine its API version here makes an
        unreachable engine fail now, as :class:`DockerUnavailable`.
        """
        where = host or "the default Docker socket"
        try:
            client = docker.DockerClient(base_url=host, version="auto", timeout=call_timeout)
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"the Docker engine at {where} is unreachable") from exc
        return cls(client, load_timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def image_ids(self) -> frozenset[str]:
        """The ids (``sha256:...``) of every image the engine holds."""
        images = self._call("list the images", lambda: self._client.images.list(all=True))
        return frozenset(str(image.id) for image in images)

    def find_image(self, ref: str) -> ImageInfo | None:
        """The image named ``ref`` (a tag or an id), or None if the engine has none."""

        def get() -> ImageInfo | None:
            try:
                image = self._client.images.get(ref)
            except docker.errors.ImageNotFound:
                return None
            return ImageInfo(id=str(image.id), tags=tuple(image.tags))

        return self._call(f"look up image {ref}", get)

    def remove_image(self, image_id: str) -> None:
        """Remove the image ``image_id`` and its tags; an absent image is not an error."""

        def remove() -> None:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self._client.images.remove(image_id, force=True)

        self._call(f"remove image {image_id}", remove)

    def load(self, tar_chunks: Iterable[bytes]) -> list[ImageInfo]:
        """Stream a ``docker save`` tar into the engine; the images it reports loaded.

        An exception raised by ``tar_chunks`` aborts the request and propagates
        unchanged, whatever requests or urllib3 make of the cut connection.
        """
        body = WatchedBody(tar_chunks)
        # The SDK takes a request's timeout from the client; only the load gets the long one.
        quick, self._client.api.timeout = self._client.api.timeout, self._load_timeout
        try:
            with body.source_errors_first():
                images = self._call(
                    "load the images", lambda: self._client.images.load(body.chunks())
                )
        finally:
            self._client.api.timeout = quick
        return [ImageInfo(id=str(i.id), tags=tuple(i.tags)) for i in images]

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except docker.errors.APIError as exc:
            raise DockerRefused(f"the Docker engine refused to {what}: {_explain(exc)}") from exc
        except docker.errors.ImageLoadError as exc:
            raise DockerRefused(f"the Docker engine refused to {what}: {printable(exc)}") from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DockerUnavailable(
                f"cannot {what}: the Docker engine is unreachable or stopped answering"
            ) from exc
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"cannot {what}: {printable(exc)}") from exc


def _explain(exc: docker.errors.APIError) -> str:
    return printable(exc.explanation if isinstance(exc.explanation, str) else exc)


__all__ = ["CALL_TIMEOUT", "DockerEngine", "ImageInfo"]
