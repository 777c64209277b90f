"""Resource management: cofferd's side of the upstream, and the model cache.

- :mod:`~cofferd.resources.upstream`: the API client (protocol v1 over requests:
  auto-login, retries with backoff, timeouts, the CDN without the token).
- :mod:`~cofferd.resources.wire`: the upstream's answers, checked into dataclasses.
- :mod:`~cofferd.resources.cache`: verified big parts by folder/name/version.
- :mod:`~cofferd.resources.service`: ``load`` and ``upload``, which the RPC methods wrap.
"""
