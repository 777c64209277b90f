"""``metrics``: the daemon's counters, gauges and histograms as one JSON snapshot.

The same figures the Prometheus textfile holds (``metrics_textfile_dir``),
for a caller on the socket; see :mod:`cofferd.observe.metrics` for the shape.
"""

from __future__ import annotations

from typing import Any

from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.spec import MethodSpec, obj


def metrics(call: Call, /) -> dict[str, Any]:
    return call.app.metrics.snapshot()


_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_NUMBER = {"type": "number"}
_SAMPLE = {
    "oneOf": [
        obj({"labels": _LABELS, "value": _NUMBER}, ("labels", "value")),
        obj(
            {
                "labels": _LABELS,
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "prefixItems": [
                            {"oneOf": [_NUMBER, {"const": "+Inf"}]},
                            {"type": "integer", "minimum": 0},
                        ],
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
                "sum": _NUMBER,
                "count": {"type": "integer", "minimum": 0},
            },
            ("labels", "buckets", "sum", "count"),
        ),
    ]
}
_METRIC = obj(
    {
        "type": {"enum": ["counter", "gauge", "histogram"]},
        "help": {"type": "string"},
        "samples": {"type": "array", "items": _SAMPLE},
    },
    ("type", "help", "samples"),
)

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "metrics",
        metrics,
        "Counters, gauges and histograms: calls, durations, bytes, cache, upstream.",
        result={
            "type": "object",
            "propertyNames": {"pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
            "additionalProperties": _METRIC,
        },
    ),
)

__all__ = ["SPECS", "metrics"]
