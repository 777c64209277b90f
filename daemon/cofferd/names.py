"""The name rule of :mod:`coffer.names`, raising cofferd's own error.

The rule is written once, in the client package; this wrapper only turns its
:class:`coffer.names.BadName` into :class:`cofferd.errors.BadName`, so the
daemon's services raise from one error tree.
"""

from __future__ import annotations

from coffer import names
from coffer.names import NAME_PATTERN, NAME_RULE, is_valid_name
from cofferd.errors import BadName


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it follows the name rule, else raise :class:`cofferd.errors.BadName`."""
    try:
        return names.check_name(value, what)
    except names.BadName as exc:
        raise BadName(str(exc)) from None


__all__ = ["NAME_PATTERN", "NAME_RULE", "check_name", "is_valid_name"]
