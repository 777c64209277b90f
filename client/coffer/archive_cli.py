"""``coffer archive``: subcommands for sealed Docker image archives (owned by the archive work).

The hook the CLI calls: :func:`add_parser` gets the CLI's subparsers and adds
its own. A subcommand sets ``handler=`` with ``set_defaults``; the handler
takes the parsed ``argparse.Namespace`` and returns an exit code, and may raise
:class:`coffer.cli.CommandError` (a one-line message and an exit code), a
:class:`coffer.errors.CofferRPCError` or an :class:`OSError`, which the CLI
reports. Import heavy modules inside handlers so that ``coffer health`` stays
fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``archive`` subcommands to the ``coffer`` CLI (none yet)."""
