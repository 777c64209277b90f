"""coffer_upstream: the reference server of the coffer upstream protocol v1.

It serves the resource API (login and refresh tokens, small parts and keys
with signed leases, folder listings, two-phase publish, retiring, archive
keys) and, for the local store, the "CDN" (big parts behind presigned URLs):
a Starlette app under uvicorn, on SQLAlchemy (SQLite embedded, PostgreSQL
for replicas) with Alembic migrations. ``docs/upstream-protocol.md`` is the
protocol it implements; the .deb never ships it.

Modules, bottom up:

- ``config``: the server's settings, built once by the CLI.
- ``errors``: :class:`HttpError`, what endpoints raise.
- ``passwords``, ``hashing``: scrypt hashes; the bounded pool that checks them.
- ``signing``: bearer tokens and presigned CDN URLs (HMAC-SHA256); ``keys``: the secret.
- ``leases``: the Ed25519 key in the data dir and the signed leases it issues.
- ``db``: the engine, transactions, the models and the migrations (``migrations/``).
- ``store``: resource versions, uploads, archive keys; ``accounts``: users,
  refresh tokens, failed logins.
- ``blobstore``: where big parts live (the interface; ``local``).
- ``uploads``: the two-phase publish, retiring, the sweep.
- ``ratelimit``: failed logins per source; ``janitor``: the sweep under a lock.
- ``fields``, ``web``: JSON bodies and fields; what every endpoint shares.
- ``auth``: login, refresh, the bearer check; ``api``: the ``/v1`` endpoints;
  ``cdn``: the local store's ``/cdn`` endpoints.
- ``accesslog``: one line per request; ``app``: the Starlette app.
- ``serve``: uvicorn on a socket bound first; ``admin``: the admin commands;
  ``cli``: ``coffer-upstream``.
"""

__version__ = "0.1.0"
