"""``metrics``: the registry's snapshot, as the services hold it."""

from __future__ import annotations


def test_metrics_is_the_registrys_snapshot(app, invoke) -> None:
    app.metrics.set("coffer_cache_bytes", 123)
    got = invoke("metrics")
    assert got == app.metrics.snapshot()
    assert got["coffer_cache_bytes"]["samples"][0]["value"] == 123
