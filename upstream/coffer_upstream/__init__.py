"""coffer_upstream: the reference server of the coffer upstream protocol v1.

It serves the resource API (login, small parts and keys with signed leases,
folder listings, two-phase publish, retiring, archive keys) and the "CDN"
(big parts behind presigned URLs) from one ``http.server`` process, with
SQLite and plain files in a data dir. It exists for the test suite, demos and
anyone without a server yet; the .deb never ships it.
``docs/upstream-protocol.md`` is the protocol it implements.

Modules:

- ``config``: the server's settings, built once by the CLI.
- ``errors``: :class:`HttpError`, the one exception the handlers raise.
- ``passwords``: scrypt password hashes.
- ``signing``: bearer tokens and presigned CDN URLs (HMAC-SHA256).
- ``leases``: the Ed25519 key in the data dir and the signed leases it issues.
- ``ratelimit``: the login failure limiter.
- ``datadir``: the data dir layout and its secret.
- ``store``: SQLite: users, resource versions, uploads, archive keys.
- ``bodies``: reading request bodies (JSON, Content-Length, chunked) and fields.
- ``api``: the ``/v1`` endpoints.
- ``cdn``: the ``/cdn`` endpoints (GET with Range via sendfile, PUT to a temp file).
- ``routing``: the endpoints by path pattern and method.
- ``responses``, ``request``: what endpoints get and return.
- ``server``: the HTTP server, its request handler and the janitor.
- ``cli``: ``coffer-upstream serve``, ``user add`` and ``lease-key``.
"""

__version__ = "0.1.0"
