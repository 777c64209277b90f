"""Unattended in the field: boot login from a systemd credential, offline use on signed leases.

- :mod:`credentials`: the login and the device key, read from
  ``$CREDENTIALS_DIRECTORY`` (never written, never logged).
- :mod:`sealing`: records encrypted with the device key (AES-256-GCM).
- :mod:`lease`: the upstream's Ed25519-signed lease, checked against pinned keys.
- :mod:`clock`: trusted time (a persisted high-water mark, a monotonic bound).
- :mod:`offline`: the one decision "online answer or offline record" and the record store.
- :mod:`login`: the boot login and its re-login with backoff.

This package sits above ``resources/`` (it wraps the API client and reads the
index) and below ``rpc/``.
"""
