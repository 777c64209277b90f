"""The reference upstream's own tests run against both of its databases.

Every test that uses ``upstream_database`` (through the ``upstream`` fixtures)
runs once per database: SQLite, the embedded default, and a real PostgreSQL.
A module whose tests do not depend on the database (HTTP framing, the CDN's
ranges, signatures) says ``DATABASES = ("sqlite",)`` and runs once; a test
that needs one database names it with ``@pytest.mark.databases("postgresql")``.
"""

from __future__ import annotations

import pytest

BOTH = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "upstream_database" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("databases")
    databases = marker.args if marker else getattr(metafunc.module, "DATABASES", BOTH)
    metafunc.parametrize("upstream_database", databases, indirect=True, scope="session")


@pytest.fixture(scope="session")
def upstream_database(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="session")
def upstream_trust() -> bool:
    # The upstream's own tests set up its TUF repository where they test it
    # (tests/coffer_upstream/trust, upstream_factory(trust=True)); elsewhere its
    # publish() stays the plain two-phase publish it tests.
    return False
