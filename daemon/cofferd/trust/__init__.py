"""Only the publisher ships: TUF-signed releases (docs/trust.md).

- :mod:`release`: the signed target of a resource or an archive, the key
  commitment and the segment manifest; what publishers write and devices read.

This package sits beside ``field/``: it reads the upstream's metadata through
python-tuf and decides whether a release may be delivered, before ``resources/``
reads a byte of it.
"""
