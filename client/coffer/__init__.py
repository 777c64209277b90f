"""coffer: the client library and CLI for the cofferd daemon.

``coffer.client`` is the library, ``coffer.cli`` the ``coffer`` command built
on it (see docs/client.md). The package is the bottom layer of the project
(docs/architecture.md): standard library only, the version, the protocol
constants, the name rule and ``atomic_file``. cofferd depends on it, never the
reverse.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
