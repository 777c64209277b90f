"""``coffer rpc METHOD [PARAMS_JSON]``: one raw call, for scripts and debugging.

The result is printed as JSON on stdout; an error answer as its JSON error
object (``code``, ``message``, ``data``) on stderr, with the exit status the
other commands give for that code. ``coffer rpc rpc.discover`` prints the
API's OpenRPC document. No fd is passed: methods that take one answer inline
or refuse (see ``x-coffer-fd`` in that document).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from coffer.client import Client
from coffer.errors import CofferRPCError

#: ``command(name, handler, help)`` of :func:`coffer.cli.build_parser`.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add_parser(command: AddCommand, exit_code_for: Callable[[CofferRPCError], int]) -> None:
    """Add ``rpc`` through ``command``; ``exit_code_for`` maps an error to the exit status."""
    p = command(
        "rpc",
        functools.partial(cmd_rpc, exit_code_for=exit_code_for),
        "call a method by name and print its JSON result (rpc.discover lists them)",
    )
    p.add_argument("method", metavar="METHOD", help="e.g. health, status, rpc.discover, metrics")
    p.add_argument(
        "params",
        metavar="PARAMS_JSON",
        nargs="?",
        type=params_object,
        help='the params as one JSON object, e.g. \'{"filename": "a.bin"}\' (default: none)',
    )


def params_object(text: str) -> dict[str, Any]:
    """PARAMS_JSON as a dict; anything else is a usage error."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"PARAMS_JSON is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("PARAMS_JSON must be a JSON object (params by name)")
    return value


def cmd_rpc(args: argparse.Namespace, *, exit_code_for: Callable[[CofferRPCError], int]) -> int:
    try:
        with Client(args.socket, timeout=args.timeout) as client:
            result = client.call(args.method, args.params)
    except CofferRPCError as exc:
        data = {**exc.data, "detail": exc.detail}
        error = {"code": exc.code, "message": exc.message, "data": data}
        print(json.dumps(error, indent=2), file=sys.stderr)
        return int(exit_code_for(exc))
    print(json.dumps(result, indent=2))
    return 0
