"""Fixtures of the resource tests: a scripted HTTP server beside the real upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted_http import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()
