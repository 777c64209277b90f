"""The one rule for folder names, resource names and archive ids.

A name is 1 to 128 characters from ``A-Z a-z 0-9 . _ -`` and starts with a
letter or a digit. So ``.``, ``..``, hidden files, slashes, NUL, control
characters, spaces and non-ASCII look-alikes are all refused, and a name is
always safe as a single path component and in a URL path without escaping.

The rule lives here, in the client package, so that the client, cofferd and
the reference upstream apply the same one; each turns :class:`BadName` into
its own error (cofferd: :class:`cofferd.errors.BadName`).
"""

from __future__ import annotations

import re

NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
#: The rule as a regular expression, to be matched in full (``re.fullmatch``);
#: cofferd's JSON Schema for names anchors it.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(NAME_PATTERN)


class BadName(ValueError):
    """A folder, resource name or archive id does not follow the name rule."""


def is_valid_name(value: object) -> bool:
    """Whether ``value`` is a ``str`` that follows the name rule."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it follows the name rule, else raise :class:`BadName`.

    The message quotes the value with ``repr`` so control characters show as
    escapes and never reach a log raw.
    """
    if not is_valid_name(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 200 else "the value"
        raise BadName(f"invalid {what} {shown}: must be {NAME_RULE}")
    assert isinstance(value, str)
    return value
