"""The big/small split: cut a ciphertext in two.

The **small part** is the ciphertext's first bytes, always the whole 40-byte
header (so the salt and nonce prefix live only upstream, next to the key);
the **big part** is the rest, served from the CDN. The big part alone cannot
be decrypted, not even with the key: without the salt no segment key can be
derived. Load joins them again by decrypting the small part as the prefix of
the big part's file (``stream.decrypt_file(..., prefix=small)``); a wrong
pairing fails there with the one :class:`cofferd.errors.DecryptionError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cofferd.binary_split.stream import HEADER_SIZE

DEFAULT_SMALL_SIZE = 4096
"""Bytes in the small part by default: the 40-byte header and 4056 more.

Only the header matters for secrecy (see the module docstring), so bytes
beyond it buy nothing there and the small part should stay small: it lives in
the upstream's database and travels base64-encoded inside a JSON answer, where
4 KiB (about 5.5 KiB of base64) is one memory page and costs nothing next to
the round trip. Taking some bytes past the header also keeps the big part from
starting on a recognisable segment boundary, and lets a resource of up to
about 4 KiB live in the small part alone with an empty big part.
"""


def _check_small_size(small_size: int) -> None:
    if not isinstance(small_size, int):
        raise TypeError("small_size must be an int")
    if small_size < HEADER_SIZE:
        raise ValueError(f"small_size must be at least the {HEADER_SIZE}-byte header")


def split(
    ciphertext: Iterable[bytes], small_size: int = DEFAULT_SMALL_SIZE
) -> tuple[bytes, Iterator[bytes]]:
    """The small part, then the big part's chunks, streaming.

    Reads from ``ciphertext`` only until ``small_size`` bytes are in hand; the
    rest flows through the returned iterator. A ciphertext shorter than
    ``small_size`` gives it all to the small part and an empty big part; one
    shorter than the header is a caller mistake (``ValueError``).
    """
    _check_small_size(small_size)
    it = iter(ciphertext)
    head = bytearray()
    for chunk in it:
        head += chunk
        if len(head) >= small_size:
            break
    if len(head) < HEADER_SIZE:
        raise ValueError("the ciphertext is shorter than its header")
    small, first_big = bytes(head[:small_size]), bytes(head[small_size:])

    def big() -> Iterator[bytes]:
        if first_big:
            yield first_big
        yield from it

    return small, big()
