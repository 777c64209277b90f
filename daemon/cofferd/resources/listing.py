"""The upstream's folder listing (``GET /v1/resources/{folder}``), checked, page by page.

Items carry no key, small part or URL; names are checked against the name
rule like any name the upstream gives, so a listing can never put a path
or a control character into a cache listing or a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from coffer.names import is_valid_name
from cofferd.errors import UpstreamProtocolError

#: Items asked for per page.
PAGE_LIMIT = 500
#: Pages followed at most for one listing: a cursor loop cannot hold a call forever.
MAX_PAGES = 200


@dataclass(frozen=True)
class Listed:
    """One resource of a folder, at its current version."""

    name: str
    version: int
    plaintext_size: int
    big_size: int
    updated_at: float | None


def parse_page(body: object) -> tuple[list[Listed], str | None]:
    """A listing page's items and its ``next_cursor``."""
    if not isinstance(body, dict):
        raise UpstreamProtocolError("listing answer is not a JSON object")
    items, cursor = body.get("items"), body.get("next_cursor")
    if not isinstance(items, list):
        raise UpstreamProtocolError("listing answer: items is not a list")
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise UpstreamProtocolError("listing answer: next_cursor is not a string or null")
    return [_item(item) for item in items], cursor


def _item(item: Any) -> Listed:
    if not isinstance(item, dict):
        raise UpstreamProtocolError("listing answer: an item is not an object")
    name = item.get("name")
    if not isinstance(name, str) or not is_valid_name(name):
        raise UpstreamProtocolError("listing answer: an item's name breaks the name rule")
    ints = {}
    for field, minimum in (("version", 1), ("plaintext_size", 0), ("big_size", 0)):
        value = item.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UpstreamProtocolError(f"listing answer: {field} is not an integer >= {minimum}")
        ints[field] = value
    updated = item.get("updated_at")
    if updated is not None and (isinstance(updated, bool) or not isinstance(updated, int | float)):
        raise UpstreamProtocolError("listing answer: updated_at is not a number or null")
    return Listed(name, ints["version"], ints["plaintext_size"], ints["big_size"], updated)


def every_item(
    fetch: Callable[[str | None], tuple[list[Listed], str | None]],
) -> Iterator[Listed]:
    """Follow ``next_cursor`` from the first page; at most :data:`MAX_PAGES` pages."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        items, cursor = fetch(cursor)
        yield from items
        if cursor is None:
            return
    raise UpstreamProtocolError(f"listing answer: more than {MAX_PAGES} pages")
