"""The reference upstream's own tests run against both of its databases."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def upstream_database(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param
