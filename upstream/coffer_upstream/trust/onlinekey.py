"""The online key: signs ``snapshot`` and ``timestamp``, nothing else.

``DIR/online.key``: an Ed25519 private key, PKCS#8 PEM, mode 0600, made on
first use (``coffer-upstream trust online-key`` or the first ``serve``), as
the lease key is. Leaking it lets an attacker freeze devices or mix states
until the timestamp expires, never sign a release (docs/upstream-deploy.md).
"""

from __future__ import annotations

from pathlib import Path

from securesystemslib.signer import CryptoSigner, SSlibKey

from coffer_upstream.keys import load_or_create_ed25519

FILE_NAME = "online.key"


class OnlineKey:
    def __init__(self, signer: CryptoSigner) -> None:
        self.signer = signer
        self.public: SSlibKey = signer.public_key

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @classmethod
    def load_or_create(cls, data_dir: Path) -> OnlineKey:
        private = load_or_create_ed25519(data_dir / FILE_NAME)
        return cls(CryptoSigner(private, SSlibKey.from_crypto(private.public_key())))
