"""Transactions on an engine, joined by the steps of one call on one thread.

:meth:`Transactions.atomic` opens a transaction (a write one on SQLite:
``BEGIN IMMEDIATE``); a step run inside it, on the same thread, joins it.
:meth:`Transactions.read` joins the one under way or opens a read-only one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


class Transactions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        with self.engine.connect() as connection, connection.begin():
            self._local.connection = connection
            try:
                yield connection
            finally:
                self._local.connection = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        with (
            self.engine.connect().execution_options(write=False) as connection,
            connection.begin(),
        ):
            yield connection
