"""The metrics registry, read back by prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cofferd.observe.metrics import (
    DURATION_BUCKETS,
    Registry,
    TextfileWriter,
    coffer_registry,
    count_and_observe,
)


def parsed(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def busy_registry() -> Registry:
    r = coffer_registry()
    r.inc("coffer_calls_total", method="load", outcome="ok")
    r.inc("coffer_calls_total", method="load", outcome="ok")
    r.inc("coffer_calls_total", method="login", outcome="error")
    r.observe("coffer_call_duration_seconds", 0.003, method="load")
    r.observe("coffer_call_duration_seconds", 0.5, method="load")  # on a bound: le is <=
    r.observe("coffer_call_duration_seconds", 900, method="load")  # past the last bound
    r.inc("coffer_bytes_out_total", 5 << 20)
    r.set("coffer_upstream_reachable", 1)
    r.set("coffer_upstream_last_contact_timestamp_seconds", 1_790_000_000.25)
    return r


def test_every_coffer_metric_parses_with_help_and_type() -> None:
    families = parsed(busy_registry().to_prometheus_text())
    # prometheus_client names a counter family without its _total suffix.
    assert set(families) == {
        "coffer_calls",
        "coffer_call_duration_seconds",
        "coffer_bytes_out",
        "coffer_bytes_in",
        "coffer_cache_hits",
        "coffer_cache_misses",
        "coffer_cache_bytes",
        "coffer_upstream_reachable",
        "coffer_upstream_last_contact_timestamp_seconds",
        "coffer_lease_earliest_expiry_timestamp_seconds",
    }
    assert families["coffer_calls"].type == "counter"
    assert families["coffer_cache_bytes"].type == "gauge"
    assert families["coffer_call_duration_seconds"].type == "histogram"
    assert families["coffer_bytes_out"].documentation == "plaintext bytes served to callers"
    assert samples(families["coffer_calls"]) == {
        ("coffer_calls_total", (("method", "load"), ("outcome", "ok"))): 2,
        ("coffer_calls_total", (("method", "login"), ("outcome", "error"))): 1,
    }
    assert samples(families["coffer_bytes_out"]) == {("coffer_bytes_out_total", ()): 5 << 20}
    gauges = samples(families["coffer_upstream_last_contact_timestamp_seconds"])
    assert gauges == {("coffer_upstream_last_contact_timestamp_seconds", ()): 1_790_000_000.25}


def test_a_histogram_has_cumulative_buckets_inf_sum_and_count() -> None:
    family = parsed(busy_registry().to_prometheus_text())["coffer_call_duration_seconds"]
    got = samples(family)
    method = ("method", "load")

    def bucket(le: str) -> float:
        return got[("coffer_call_duration_seconds_bucket", (("le", le), method))]

    assert bucket("0.001") == 0
    assert bucket("0.005") == 1
    assert bucket("0.1") == 1
    assert bucket("0.5") == 2
    assert bucket("300.0") == 2
    assert bucket("+Inf") == 3
    assert got[("coffer_call_duration_seconds_count", (method,))] == 3
    assert got[("coffer_call_duration_seconds_sum", (method,))] == pytest.approx(900.503)
    buckets = [k for k in got if k[0].endswith("_bucket")]
    assert len(buckets) == len(DURATION_BUCKETS) + 1


def test_label_values_are_escaped() -> None:
    r = Registry()
    r.counter("odd_total", "a help with a \\ and a\nnewline", ("name",))
    nasty = 'a"b\\c\nd}e,f="g"'
    r.inc("odd_total", name=nasty)
    family = parsed(r.to_prometheus_text())["odd"]
    assert family.documentation == "a help with a \\ and a\nnewline"
    assert [s.labels for s in family.samples] == [{"name": nasty}]


def test_snapshot_is_plain_json_and_agrees_with_the_text() -> None:
    r = busy_registry()
    snap = json.loads(json.dumps(r.snapshot()))
    calls = snap["coffer_calls_total"]
    assert calls["type"] == "counter"
    assert {"labels": {"method": "load", "outcome": "ok"}, "value": 2} in calls["samples"]
    (hist,) = snap["coffer_call_duration_seconds"]["samples"]
    assert hist["count"] == 3
    assert hist["buckets"][-1] == ["+Inf", 3]
    assert hist["buckets"][0] == [0.001, 0]
    assert snap["coffer_cache_bytes"]["samples"] == []


def test_misuse_is_refused() -> None:
    r = coffer_registry()
    with pytest.raises(ValueError, match="takes labels"):
        r.inc("coffer_calls_total", method="load")
    with pytest.raises(KeyError):
        r.inc("coffer_cache_bytes")  # a gauge, not a counter
    with pytest.raises(KeyError):
        r.set("coffer_nope", 1)
    with pytest.raises(ValueError, match="only goes up"):
        r.inc("coffer_bytes_in_total", -1)
    with pytest.raises(ValueError, match="twice"):
        r.counter("coffer_calls_total", "again")
    with pytest.raises(ValueError, match="bad metric name"):
        r.counter("coffer-bad", "x")
    with pytest.raises(ValueError, match="bad label name"):
        r.histogram("coffer_h", "x", ("le",))
    with pytest.raises(ValueError, match="increasing"):
        r.histogram("coffer_h2", "x", buckets=(1.0, 0.5))


def test_concurrent_updates_are_all_counted() -> None:
    r = coffer_registry()

    def work() -> None:
        for _ in range(5000):
            r.inc("coffer_calls_total", method="load", outcome="ok")
            r.observe("coffer_call_duration_seconds", 0.01, method="load")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    snap = r.snapshot()
    assert snap["coffer_calls_total"]["samples"][0]["value"] == 20000
    assert snap["coffer_call_duration_seconds"]["samples"][0]["count"] == 20000


def test_the_textfile_is_replaced_whole_and_readable(tmp_path: Path) -> None:
    r = busy_registry()
    writer = TextfileWriter(r, tmp_path, interval=0.02)
    assert writer.path == tmp_path / "cofferd.prom"
    seen: set[str] = set()
    writer.start()
    try:
        deadline = time.monotonic() + 5
        reads = 0
        while time.monotonic() < deadline and reads < 200:
            r.inc("coffer_bytes_in_total", 1)
            seen.update(os.listdir(tmp_path))
            if writer.path.exists():
                text = writer.path.read_text()
                # Never a partial file: it always parses and ends where the registry ends.
                assert "coffer_lease_earliest_expiry_timestamp_seconds" in parsed(text)
                reads += 1
    finally:
        writer.stop()
    assert reads > 0
    # The temp file never has the .prom ending the textfile collector reads.
    assert {name for name in seen if name.endswith(".prom")} == {"cofferd.prom"}
    assert os.listdir(tmp_path) == ["cofferd.prom"]
    assert (writer.path.stat().st_mode & 0o777) == 0o644
    final = parsed(writer.path.read_text())["coffer_bytes_in"]
    assert final.samples[0].value > 0


def test_stop_ends_the_thread_at_once(tmp_path: Path) -> None:
    writer = TextfileWriter(coffer_registry(), tmp_path, interval=3600).start()
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 2
    assert (tmp_path / "cofferd.prom").exists()


def test_bound_series_update_as_the_registry_does() -> None:
    r = coffer_registry()
    calls = r.series("coffer_calls_total", method="load", outcome="ok")
    durations = r.series("coffer_call_duration_seconds", method="load")
    count_and_observe(calls, durations, 0.003)
    count_and_observe(calls, durations, 2.0)
    calls.inc(3)
    durations.observe(0.0005)
    r.inc("coffer_calls_total", method="load", outcome="ok")
    snap = r.snapshot()
    assert snap["coffer_calls_total"]["samples"] == [
        {"labels": {"method": "load", "outcome": "ok"}, "value": 6}
    ]
    (hist,) = snap["coffer_call_duration_seconds"]["samples"]
    assert hist["count"] == 3
    assert hist["sum"] == pytest.approx(2.0035)
    assert dict((str(le), n) for le, n in hist["buckets"])["0.005"] == 2
    with pytest.raises(ValueError, match="never down"):
        calls.inc(-1)
    with pytest.raises(ValueError, match="counter's series"):
        count_and_observe(durations, calls, 1.0)
    with pytest.raises(KeyError):
        r.series("coffer_cache_bytes")  # a gauge is set, not bound
    with pytest.raises(ValueError, match="takes labels"):
        r.series("coffer_calls_total", method="load")


def test_collectors_run_before_each_snapshot_and_a_failing_one_is_skipped() -> None:
    r = coffer_registry()
    seen = []

    def broken(registry: Registry) -> None:
        raise OSError("gone")

    r.on_collect(broken)
    r.on_collect(lambda registry: seen.append(registry.set("coffer_cache_bytes", 42)))
    assert r.snapshot()["coffer_cache_bytes"]["samples"][0]["value"] == 42
    assert "coffer_cache_bytes 42" in r.to_prometheus_text()
    assert len(seen) == 2
