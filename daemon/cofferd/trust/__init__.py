"""Only the publisher ships: TUF-signed releases (docs/trust.md).

- :mod:`release`: the signed target of a resource or an archive, the key
  commitment and the segment manifest; what publishers write and devices read.
- :mod:`anchor`: the pinned root and python-tuf's metadata dir.
- :mod:`fetcher`: python-tuf's fetcher over the daemon's upstream session.
- :mod:`rules`: python-tuf's refusals named by the rules of docs/trust.md.
- :mod:`service`: the decision (which release, if any), refreshes, status,
  and the publisher's and operator's calls.
- :mod:`checks`: an upstream answer checked against its signed release.

This package sits above ``resources/`` and below ``field/`` and ``unlock``:
it reads the upstream's metadata through python-tuf and decides which release
may be delivered, before ``resources/`` reads a byte of it.
"""
