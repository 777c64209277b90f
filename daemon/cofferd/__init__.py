"""cofferd: the coffer device daemon.

Parts, as the design names them:

- ``cofferd.models``: core models (unlock states, results).
- ``cofferd.errors``: the one exception tree of the package.
- ``cofferd.binary_split``: the encrypted format, the big/small split, the
  Docker image archive.
- ``cofferd.resources``: resource management (the upstream API client, the
  big-part cache, load and upload).
- ``cofferd.rpc``: the JSON-RPC methods and the Unix-socket transport.
- ``cofferd.tools``: publisher commands (``coffer archive``), a plugin of the
  ``coffer`` CLI.

The layers and what each may import: docs/architecture.md. The version is the
client package's: one number for the daemon and the client it ships with.
"""

from coffer import __version__

__all__ = ["__version__"]
