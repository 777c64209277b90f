"""Core models: the unlock state machine and the results services return."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class UnlockState(enum.Enum):
    """Where the unlock workflow is. Values are what ``unlock_status`` reports."""

    IDLE = "idle"
    AUTHENTICATING = "authenticating"
    DOWNLOADING_KEY = "downloading_key"
    DECRYPTING = "decrypting"
    LOADING_IMAGES = "loading_images"
    READY = "ready"
    ERROR = "error"


#: Every allowed transition; anything else is a bug and raises.
#: Decryption and the image load run together (the tar streams into Docker),
#: so DECRYPTING goes to LOADING_IMAGES once the engine has the stream.
UNLOCK_TRANSITIONS: dict[UnlockState, frozenset[UnlockState]] = {
    UnlockState.IDLE: frozenset({UnlockState.AUTHENTICATING, UnlockState.READY}),
    UnlockState.AUTHENTICATING: frozenset({UnlockState.DOWNLOADING_KEY, UnlockState.ERROR}),
    UnlockState.DOWNLOADING_KEY: frozenset({UnlockState.DECRYPTING, UnlockState.ERROR}),
    UnlockState.DECRYPTING: frozenset({UnlockState.LOADING_IMAGES, UnlockState.ERROR}),
    UnlockState.LOADING_IMAGES: frozenset({UnlockState.READY, UnlockState.ERROR}),
    UnlockState.READY: frozenset({UnlockState.AUTHENTICATING}),
    UnlockState.ERROR: frozenset({UnlockState.AUTHENTICATING}),
}

#: States in which an unlock is under way (a second one is a conflict).
UNLOCK_RUNNING = frozenset(
    {
        UnlockState.AUTHENTICATING,
        UnlockState.DOWNLOADING_KEY,
        UnlockState.DECRYPTING,
        UnlockState.LOADING_IMAGES,
    }
)


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug, never a user error."""


def check_transition(current: UnlockState, new: UnlockState) -> None:
    if new not in UNLOCK_TRANSITIONS[current]:
        raise IllegalTransition(f"unlock state {current.value} -> {new.value} is not allowed")


@dataclass(frozen=True)
class LoadResult:
    """What ``load`` did: which version it wrote and how many plaintext bytes."""

    folder: str
    name: str
    version: int
    size: int
    from_cache: bool


@dataclass(frozen=True)
class UploadResult:
    """What ``upload`` published, and the release a publisher signs for it.

    ``target``: ``{"path": "resources/<folder>/<name>", **ResourceRelease.to_target()}``
    (docs/trust.md), computed from the bytes sent as they were encrypted.
    """

    folder: str
    name: str
    version: int
    size: int
    target: dict[str, Any]
