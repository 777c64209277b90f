"""coffer: the client library and CLI for the cofferd daemon.

``coffer.client`` is the library (standard library only); ``coffer.cli`` the
``coffer`` command built on it. See docs/client.md.
"""

# cofferd/__init__.py holds nothing but names and the version, so this import
# stays cheap: the daemon's dependencies load only with the daemon's modules.
from cofferd import __version__

__all__ = ["__version__"]
