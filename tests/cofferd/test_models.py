import itertools

import pytest

from cofferd.models import (
    UNLOCK_RUNNING,
    UNLOCK_TRANSITIONS,
    IllegalTransition,
    UnlockState,
    check_transition,
)


def test_every_state_has_a_row() -> None:
    assert set(UNLOCK_TRANSITIONS) == set(UnlockState)


def test_the_happy_path_is_allowed() -> None:
    path = [
        UnlockState.IDLE,
        UnlockState.AUTHENTICATING,
        UnlockState.DOWNLOADING_KEY,
        UnlockState.DECRYPTING,
        UnlockState.LOADING_IMAGES,
        UnlockState.READY,
    ]
    for current, new in itertools.pairwise(path):
        check_transition(current, new)


@pytest.mark.parametrize("state", sorted(UNLOCK_RUNNING, key=lambda s: s.value))
def test_every_running_state_can_fail(state: UnlockState) -> None:
    check_transition(state, UnlockState.ERROR)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (UnlockState.IDLE, UnlockState.DECRYPTING),
        (UnlockState.AUTHENTICATING, UnlockState.READY),
        (UnlockState.DECRYPTING, UnlockState.READY),
        (UnlockState.ERROR, UnlockState.READY),
        (UnlockState.READY, UnlockState.ERROR),
        (UnlockState.IDLE, UnlockState.ERROR),
    ],
)
def test_illegal_transitions_raise(current: UnlockState, new: UnlockState) -> None:
    with pytest.raises(IllegalTransition, match=f"{current.value} -> {new.value}"):
        check_transition(current, new)


def test_values_are_the_spec_names() -> None:
    assert {s.value for s in UnlockState} == {
        "idle",
        "authenticating",
        "downloading_key",
        "decrypting",
        "loading_images",
        "ready",
        "error",
    }
