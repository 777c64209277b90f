"""Checks of param values at the boundary, shared by the method modules.

jsonrpcserver checks which params came against each method's signature; the
values are checked here, once per call, and the services below trust the
typed values they are given.
"""

from __future__ import annotations

from cofferd.errors import InvalidParams
from cofferd.names import NAME_PATTERN, NAME_RULE, check_name
from cofferd.rpc.dispatch.spec import obj

__all__ = ["CREDENTIALS", "NAME_SCHEMA", "check_name", "count", "flag", "text"]

#: JSON Schema of a folder, resource name or archive id: the rule of
#: :mod:`coffer.names`, anchored (a JSON Schema pattern matches anywhere).
NAME_SCHEMA = {
    "type": "string",
    "pattern": f"^{NAME_PATTERN}$",
    "description": NAME_RULE,
}


def flag(value: object, what: str) -> bool:
    """``value`` if it is a boolean, else :class:`InvalidParams`."""
    if not isinstance(value, bool):
        raise InvalidParams(f"{what} must be a boolean")
    return value


def count(value: object, what: str) -> int:
    """``value`` if it is a non-negative integer (not a boolean), else :class:`InvalidParams`."""
    if type(value) is not int or value < 0:
        raise InvalidParams(f"{what} must be a non-negative integer")
    return value


def text(value: object, what: str) -> str:
    """``value`` if it is a non-empty string, else :class:`InvalidParams`."""
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{what} must be a non-empty string")
    return value


#: The params of a call that logs in (``login``, ``unlock``).
CREDENTIALS = obj(
    {"email": {"type": "string"}, "password": {"type": "string"}}, ("email", "password")
)
