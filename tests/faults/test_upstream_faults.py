"""A bad network between cofferd and the upstream: each fault ends in the right
error, within the deadline, leaves nothing behind, and the next call works."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from faults.conftest import UPSTREAM_TIMEOUT, Stack, figure, timed
from faults.proxy import Fault

DATA = os.urandom(3 * 1024 * 1024 + 17)
#: The most a call may take past its deadline(s): scheduling on a loaded machine.
SLACK = 3.0

pytestmark = pytest.mark.slow

CDN_FAULTS = {
    # Transient cuts: the client resumes with Range and gets the whole file.
    "reset once": Fault(reset_at=600_000, once=True),
    "truncated once": Fault(truncate_at=600_000, once=True),
    # Every connection cut at 600 000 bytes: each one still moves them, and
    # the client resumes from where it is (Range) until the whole file came.
    "reset always": Fault(reset_at=600_000),
    # Persistent faults: each attempt fails the same way.
    "flipped": Fault(flip_at=2_000_000),
    "5xx": Fault(status=503),
    "stall": Fault(stall=True),
}


@pytest.fixture
def published(stack: Callable[..., Stack]) -> Stack:
    s = stack()
    s.login()
    assert s.upload("m.bin", DATA)["result"]["version"] == 1
    return s


@pytest.mark.parametrize("kind", sorted(CDN_FAULTS))
def test_cdn_fault_on_a_cold_load(published: Stack, kind: str) -> None:
    published.cdn.fault = CDN_FAULTS[kind]
    elapsed, (data, answer) = timed(lambda: published.load("m.bin"))
    if kind.endswith("once") or kind == "reset always":
        assert "result" in answer, answer
        assert data == DATA
    else:
        error = answer["error"]
        if kind == "flipped":
            # The chunk holding the flipped bit differs from its signed digest.
            assert (error["code"], error["data"]["rule"]) == (422, "segment"), answer
        else:
            assert error["code"] == 503, answer
        assert data != DATA  # no verified plaintext for a failed load
    outcome = "ok" if "result" in answer else str(answer["error"]["code"])
    figure(f"CDN {kind} on a cold load: {outcome} after", elapsed)
    # One deadline per stretch without progress, retries included (docs/reliability.md).
    assert elapsed < 2 * UPSTREAM_TIMEOUT + SLACK + 2.0, elapsed
    assert published.temp_files() == []
    published.cdn.fault = Fault()
    data, answer = published.load("m.bin")
    assert answer["result"]["version"] == 1
    assert data == DATA


@pytest.mark.parametrize("kind", ["stall", "5xx", "reset"])
def test_api_fault_answers_within_the_deadline(published: Stack, kind: str) -> None:
    published.api.fault = {
        "stall": Fault(stall=True),
        "5xx": Fault(status=503),
        "reset": Fault(reset_at=10),
    }[kind]
    elapsed, (_, answer) = timed(lambda: published.load("m.bin"))
    assert answer["error"]["code"] == 503, answer
    figure(f"API {kind}: 503 after", elapsed)
    assert elapsed < UPSTREAM_TIMEOUT + SLACK, elapsed
    published.api.fault = Fault()
    assert published.load("m.bin")[0] == DATA


@pytest.mark.parametrize("kind", ["stall", "5xx", "reset"])
def test_api_fault_on_the_trust_metadata_answers_within_the_deadline(
    stack: Callable[..., Stack], kind: str
) -> None:
    # Refreshed at every load: the fault hits the load's first exchange, the
    # metadata's, of a device that never verified a release of m.bin.
    s = stack(COFFER_TRUST_REFRESH_INTERVAL="0")
    s.login()
    assert s.upload("m.bin", DATA)["result"]["version"] == 1
    s.api.fault = {
        "stall": Fault(stall=True),
        "5xx": Fault(status=503),
        "reset": Fault(reset_at=10),
    }[kind]
    elapsed, (data, answer) = timed(lambda: s.load("m.bin"))
    assert answer["error"]["code"] == 503, answer
    assert data != DATA
    figure(f"API {kind} on the trust metadata: 503 after", elapsed)
    assert elapsed < UPSTREAM_TIMEOUT + SLACK, elapsed
    assert s.daemon.call("trust.status")["result"]["last_refresh"]["ok"] is False
    s.api.fault = Fault()
    assert s.load("m.bin")[0] == DATA


def test_a_stalled_upstream_does_not_hold_other_callers(published: Stack) -> None:
    published.api.fault = Fault(stall=True)

    slow = threading.Thread(target=published.load, args=("m.bin",))
    slow.start()
    elapsed, answer = timed(lambda: published.daemon.call("status"))
    assert answer["result"]["authenticated"] is True
    figure("API stalled: status for another caller", elapsed)
    assert elapsed < 1.0, elapsed
    slow.join(UPSTREAM_TIMEOUT + SLACK)
    assert not slow.is_alive()


#: A server that gives one byte per read, as often as the timeout would allow.
TRICKLE = Fault(trickle=UPSTREAM_TIMEOUT / 2)


@pytest.mark.parametrize("side", ["api", "cdn"])
def test_a_trickling_server_fails_within_twice_the_timeout(published: Stack, side: str) -> None:
    # Each read gets a byte well inside upstream_timeout: only a deadline over
    # the whole exchange (API) or a progress rule (CDN) can end it.
    getattr(published, side).fault = TRICKLE
    elapsed, (data, answer) = timed(lambda: published.load("m.bin"))
    assert answer["error"]["code"] == 503, answer
    assert data != DATA
    figure(f"{side} trickling a byte per read: 503 after", elapsed)
    assert elapsed < 2 * UPSTREAM_TIMEOUT + SLACK, elapsed
    assert published.temp_files() == []
    getattr(published, side).fault = Fault()
    assert published.load("m.bin")[0] == DATA


@pytest.mark.parametrize(
    "fault", [TRICKLE, Fault(trickle_request=UPSTREAM_TIMEOUT / 2)], ids=["answer", "body"]
)
def test_a_trickling_cdn_fails_a_publish_within_twice_the_timeout(
    published: Stack, fault: Fault
) -> None:
    published.cdn.fault = fault
    elapsed, answer = timed(lambda: published.upload("n.bin", DATA))
    assert answer["error"]["code"] == 503, answer
    figure("CDN trickling a publish: 503 after", elapsed)
    assert elapsed < 2 * UPSTREAM_TIMEOUT + SLACK, elapsed
    published.cdn.fault = Fault()
    assert published.upload("n.bin", DATA)["result"]["version"] == 1
