"""Counters, gauges and histograms, as a JSON-able snapshot or Prometheus text.

One lock guards the whole registry: an update is a dict lookup and an add,
far cheaper than the call it counts, and one lock makes a snapshot
consistent (a histogram's count always equals its last bucket).

The text form is Prometheus' exposition format 0.0.4, the one
node_exporter's textfile collector reads; :class:`TextfileWriter` puts it in
``<dir>/cofferd.prom`` every few seconds, whole or not at all.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from coffer.atomic import atomic_file

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

# Call durations run from a cached health check (well under a millisecond) to
# a multi-gigabyte load or an unlock (minutes).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _Metric:
    def __init__(
        self,
        name: str,
        kind: Kind,
        help: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help, labels
        self.buckets = buckets
        self.values: dict[LabelValues, float] = {}
        # histogram series: per label values, [count per bucket..., +Inf count], and the sum
        self.counts: dict[LabelValues, list[int]] = {}
        self.sums: dict[LabelValues, float] = {}

    def key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {list(self.labels)}, not {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.labels)


class Registry:
    """The daemon's metrics. Thread-safe; metrics are declared once, by name.

    Updates take label values as keyword arguments; the metric name and the
    amount are positional-only, so a label may be called ``name``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[Registry], None]] = []

    def on_collect(self, collector: Callable[[Registry], None]) -> None:
        """Have ``collector`` set its gauges just before each snapshot (a figure
        read from elsewhere, such as the bytes a directory holds)."""
        self._collectors.append(collector)

    def series(self, name: str, /, **labels: str) -> Series:
        """One series of a counter or histogram, its labels resolved once.

        For the per-call path: the name lookup and the label check are paid
        here, once, not on every update.
        """
        metric = self._metrics.get(name)
        if metric is None or metric.kind == "gauge":
            raise KeyError(f"no counter or histogram named {name}")
        return Series(self._lock, metric, metric.key(labels))

    def _declare(self, metric: _Metric) -> None:
        if not _NAME.fullmatch(metric.name):
            raise ValueError(f"bad metric name {metric.name!r}")
        for label in metric.labels:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"bad label name {label!r}")
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is declared twice")
            self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self._declare(_Metric(name, "counter", help, tuple(labels)))

    def gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self._declare(_Metric(name, "gauge", help, tuple(labels)))

    def histogram(
        self,
        name: str,
        help: str,
        labels: Iterable[str] = (),
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or math.inf in bounds:
            raise ValueError("buckets must be finite, distinct and increasing")
        self._declare(_Metric(name, "histogram", help, tuple(labels), bounds))

    def _get(self, name: str, kind: Kind) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None or metric.kind != kind:
            raise KeyError(f"no {kind} named {name}")
        return metric

    def inc(self, name: str, amount: float = 1, /, **labels: str) -> None:
        """Add to a counter; a counter never goes down."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        metric = self._get(name, "counter")
        key = metric.key(labels)
        with self._lock:
            metric.values[key] = metric.values.get(key, 0) + amount

    def set(self, name: str, value: float, /, **labels: str) -> None:
        metric = self._get(name, "gauge")
        key = metric.key(labels)
        with self._lock:
            metric.values[key] = value

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        metric = self._get(name, "histogram")
        key = metric.key(labels)
        slot = bisect.bisect_left(metric.buckets, value)  # le: value <= bound
        with self._lock:
            counts = metric.counts.setdefault(key, [0] * (len(metric.buckets) + 1))
            counts[slot] += 1
            metric.sums[key] = metric.sums.get(key, 0.0) + value

    def snapshot(self) -> dict[str, Any]:
        """``{name: {"type", "help", "samples": [...]}}``, plain JSON types only.

        A counter or gauge sample is ``{"labels": {...}, "value": v}``; a
        histogram sample has ``"buckets": [[le, cumulative count], ...]`` (the
        last le is ``"+Inf"``), ``"sum"`` and ``"count"``.
        """
        for collector in self._collectors:
            try:
                collector(self)
            except Exception:  # a figure that cannot be read must not hide the others
                log.exception("a metrics collector failed")
        out: dict[str, Any] = {}
        with self._lock:
            for metric in self._metrics.values():
                samples: list[dict[str, Any]] = []
                if metric.kind == "histogram":
                    for key, counts in sorted(metric.counts.items()):
                        cumulative = _cumulative(counts)
                        bounds: list[float | str] = [*metric.buckets, "+Inf"]
                        samples.append(
                            {
                                "labels": dict(zip(metric.labels, key, strict=True)),
                                "buckets": [list(p) for p in zip(bounds, cumulative, strict=True)],
                                "sum": metric.sums[key],
                                "count": cumulative[-1],
                            }
                        )
                else:
                    for key, value in sorted(metric.values.items()):
                        labels = dict(zip(metric.labels, key, strict=True))
                        samples.append({"labels": labels, "value": value})
                out[metric.name] = {"type": metric.kind, "help": metric.help, "samples": samples}
        return out

    def to_prometheus_text(self) -> str:
        """The exposition format 0.0.4 (text/plain; version=0.0.4)."""
        lines: list[str] = []
        for name, metric in self.snapshot().items():
            lines.append(f"# HELP {name} {_escape_help(metric['help'])}")
            lines.append(f"# TYPE {name} {metric['type']}")
            for sample in metric["samples"]:
                labels = sample["labels"]
                if metric["type"] != "histogram":
                    lines.append(f"{name}{_labels(labels)} {_number(sample['value'])}")
                    continue
                for le, count in sample["buckets"]:
                    # "1.0", not "1": the form client libraries write, so series match
                    bound = le if isinstance(le, str) else repr(float(le))
                    lines.append(f"{name}_bucket{_labels({**labels, 'le': bound})} {count}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(sample['sum'])}")
                lines.append(f"{name}_count{_labels(labels)} {sample['count']}")
        return "\n".join(lines) + "\n"


class Series:
    """A counter's or histogram's series with its labels bound (see :meth:`Registry.series`)."""

    __slots__ = ("_key", "_lock", "_metric")

    def __init__(self, lock: threading.Lock, metric: _Metric, key: LabelValues) -> None:
        self._lock, self._metric, self._key = lock, metric, key

    def inc(self, amount: float = 1) -> None:
        if self._metric.kind != "counter" or amount < 0:
            raise ValueError(f"{self._metric.name}: only a counter goes up, and never down")
        with self._lock:
            self._add(amount)

    def observe(self, value: float) -> None:
        if self._metric.kind != "histogram":
            raise ValueError(f"{self._metric.name} is not a histogram")
        slot = bisect.bisect_left(self._metric.buckets, value)
        with self._lock:
            self._put(slot, value)

    def _add(self, amount: float) -> None:
        values = self._metric.values
        values[self._key] = values.get(self._key, 0) + amount

    def _put(self, slot: int, value: float) -> None:
        metric, key = self._metric, self._key
        counts = metric.counts.get(key)
        if counts is None:
            counts = metric.counts[key] = [0] * (len(metric.buckets) + 1)
        counts[slot] += 1
        metric.sums[key] = metric.sums.get(key, 0.0) + value


def count_and_observe(counter: Series, histogram: Series, value: float) -> None:
    """One event counted and its value observed, under one lock: the per-call path.

    Both series must come from the same registry (they share its lock).
    """
    if counter._metric.kind != "counter" or histogram._metric.kind != "histogram":
        raise ValueError("count_and_observe takes a counter's series, then a histogram's")
    slot = bisect.bisect_left(histogram._metric.buckets, value)
    with counter._lock:
        counter._add(1)
        histogram._put(slot, value)


def _cumulative(counts: list[int]) -> list[int]:
    total, out = 0, []
    for c in counts:
        total += c
        out.append(total)
    return out


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def coffer_registry() -> Registry:
    """A registry with every metric cofferd exports declared."""
    r = Registry()
    r.counter(
        "coffer_calls_total",
        "RPC calls by method and outcome (ok, hung_up, or the error: not_found, ...)",
        ("method", "outcome"),
    )
    r.histogram("coffer_call_duration_seconds", "RPC call duration", ("method",))
    r.counter("coffer_bytes_out_total", "plaintext bytes served to callers")
    r.counter("coffer_bytes_in_total", "plaintext bytes uploaded by callers")
    r.counter("coffer_cache_hits_total", "loads served from the cache")
    r.counter("coffer_cache_misses_total", "loads that had to fetch from upstream")
    r.gauge("coffer_cache_bytes", "bytes held in the cache")
    r.gauge("coffer_upstream_reachable", "1 if the last upstream request got an answer, else 0")
    r.gauge(
        "coffer_upstream_last_contact_timestamp_seconds",
        "Unix time of the last answer from upstream",
    )
    r.gauge(
        "coffer_lease_earliest_expiry_timestamp_seconds",
        "Unix time the first held lease expires",
    )
    return r


class TextfileWriter:
    """Writes the registry to ``<directory>/cofferd.prom`` every ``interval`` seconds.

    For node_exporter's textfile collector, which reads every ``*.prom`` of
    its directory: the temp file is ``.cofferd.prom.<random>.part``, which it
    skips, and is renamed over ``cofferd.prom`` once complete and fsynced.
    """

    FILENAME = "cofferd.prom"

    def __init__(self, registry: Registry, directory: Path, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._registry = registry
        self.path = directory / self.FILENAME
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        """One atomic write, now."""
        with atomic_file(self.path) as f:
            f.write(self._registry.to_prometheus_text().encode("utf-8"))
        self.path.chmod(0o644)  # mkstemp made it 0600; node_exporter runs as another user

    def write_quietly(self) -> None:
        """:meth:`write`, a failure logged rather than raised."""
        try:
            self.write()
        except OSError as exc:  # a full disk must not stop the daemon; try again later
            log.warning("cannot write %s: %s", self.path, exc)

    def start(self) -> TextfileWriter:
        self._thread = threading.Thread(target=self._run, name="metrics-textfile", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.write_quietly()
            if self._stop.wait(self._interval):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """End the writer thread; the file stays as last written."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
