"""``health`` and ``status`` against fake services."""

from __future__ import annotations

from cofferd import __version__
from cofferd.models import UnlockState


def test_health_says_ok_and_the_version(invoke) -> None:
    assert invoke("health") == {"status": "ok", "version": __version__}


def test_status_is_built_from_the_services(app, invoke) -> None:
    app.client.authenticated = True
    app.unlock.state = UnlockState.READY
    app.unlock.engine_checked_at = 12.5
    app.boot_login.source = "credential"
    app.add_entry("a.bin", size=7)
    got = invoke("status")
    assert got["authenticated"] is True
    assert got["upstream_url"] == "http://127.0.0.1:9"
    assert got["model_cache_dir"] == str(app.settings.cache_dir)
    assert got["unlock"] == {"state": "ready", "engine_checked_at": 12.5}
    assert got["field"]["login_source"] == "credential"
    assert got["field"]["device_key"] is False  # records_persistent: no device key
    assert got["field"]["mode"] == "online"
    assert (got["cache"]["bytes"], got["cache"]["entries"]) == (7, 1)
