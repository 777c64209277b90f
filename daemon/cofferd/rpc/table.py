"""The method table: every method of the socket API, as data, in one place.

The dispatcher is built from :data:`TABLE` and nothing else; a method a
feature adds goes into its module's ``SPECS`` and that tuple goes here. A
description of the API (``rpc.discover``) is generated from the same table
and added last, describing itself too.
"""

from __future__ import annotations

from cofferd.rpc.dispatch.discover import with_discover
from cofferd.rpc.dispatch.spec import MethodSpec
from cofferd.rpc.methods import cache, metrics, resources, session, system, trust, unlock

TABLE: tuple[MethodSpec, ...] = with_discover(
    system.SPECS
    + session.SPECS
    + resources.SPECS
    + cache.SPECS
    + unlock.SPECS
    + metrics.SPECS
    + trust.SPECS
)
