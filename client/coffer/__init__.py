"""coffer: the client library and CLI for the cofferd daemon."""

from cofferd import __version__

__all__ = ["__version__"]
