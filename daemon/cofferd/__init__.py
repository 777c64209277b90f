"""cofferd: the coffer device daemon.

Parts, as the design names them:

- ``cofferd.models``: core models (unlock states, results).
- ``cofferd.errors``: the one exception tree of the package.
- ``cofferd.binary_split``: the encrypted format, the big/small split, the
  Docker image archive.
- ``cofferd.resources``: resource management (the upstream API client, the
  big-part cache, load and upload).
- ``cofferd.rpc``: the JSON-RPC methods and the Unix-socket transport.
"""

__version__ = "0.1.0"
