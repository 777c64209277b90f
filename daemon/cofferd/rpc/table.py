"""The method table: every method of the socket API, as data, in one place.

The dispatcher is built from :data:`TABLE` and nothing else; a method a
feature adds goes into its module's ``SPECS`` and that tuple goes here. A
description of the API (``rpc.discover``) is generated from the same table
and added last, describing itself too.
"""

from __future__ import annotations

from cofferd.rpc import (
    cache_methods,
    field_methods,
    memfd_methods,
    methods,
    metrics_methods,
    unlock,
)
from cofferd.rpc.discover import with_discover
from cofferd.rpc.spec import MethodSpec

TABLE: tuple[MethodSpec, ...] = with_discover(
    methods.SPECS
    + unlock.SPECS
    + field_methods.SPECS
    + memfd_methods.SPECS
    + cache_methods.SPECS
    + metrics_methods.SPECS
)
