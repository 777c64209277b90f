"""The upstream listing's parser and the cursor loop."""

from __future__ import annotations

import pytest

from cofferd.errors import UpstreamProtocolError
from cofferd.resources import listing
from cofferd.resources.listing import Listed, every_item, parse_page

ITEM = {"name": "a.bin", "version": 2, "plaintext_size": 10, "big_size": 0, "updated_at": None}


def test_a_page_parses():
    items, cursor = parse_page({"items": [ITEM], "next_cursor": "abc"})
    assert items == [Listed("a.bin", 2, 10, 0, None)]
    assert cursor == "abc"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"items": {}, "next_cursor": None},
        {"items": [ITEM], "next_cursor": ""},
        {"items": [{**ITEM, "name": "../etc"}], "next_cursor": None},
        {"items": [{**ITEM, "name": "a\x1b[2J"}], "next_cursor": None},
        {"items": [{**ITEM, "version": 0}], "next_cursor": None},
        {"items": [{**ITEM, "big_size": True}], "next_cursor": None},
        {"items": [{**ITEM, "updated_at": "yesterday"}], "next_cursor": None},
    ],
)
def test_bad_pages_are_refused(body):
    with pytest.raises(UpstreamProtocolError):
        parse_page(body)


def test_cursors_are_followed_to_the_end():
    pages = {None: (["a", "b"], "1"), "1": (["c"], "2"), "2": ([], None)}
    asked = []

    def fetch(cursor):
        asked.append(cursor)
        names, nxt = pages[cursor]
        return [Listed(n, 1, 0, 0, None) for n in names], nxt

    assert [i.name for i in every_item(fetch)] == ["a", "b", "c"]
    assert asked == [None, "1", "2"]


def test_a_cursor_loop_is_cut(monkeypatch):
    monkeypatch.setattr(listing, "MAX_PAGES", 5)
    calls = []

    def fetch(cursor):
        calls.append(cursor)
        return [], "again"

    with pytest.raises(UpstreamProtocolError, match="more than 5 pages"):
        list(every_item(fetch))
    assert len(calls) == 5
