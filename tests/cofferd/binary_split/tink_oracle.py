"""Google Tink's StreamingAead, the test oracle for the format, on a raw key."""

from __future__ import annotations

import io

from tink import cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from cofferd.binary_split import stream

TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"


class _Unclosing(io.BytesIO):
    """Tink's encrypting stream closes its destination; keep the bytes readable."""

    def close(self) -> None:
        pass


class TinkOracle:
    """Tink's own StreamingAead over a keyset holding exactly our raw key."""

    def __init__(self, key: bytes, segment_size: int) -> None:
        params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=segment_size,
            derived_key_size=stream.KEY_SIZE,
            hkdf_hash_type=common_pb2.SHA256,
        )
        proto_key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
            version=0, key_value=key, params=params
        )
        keyset = tink_pb2.Keyset(
            primary_key_id=1,
            key=[
                tink_pb2.Keyset.Key(
                    key_data=tink_pb2.KeyData(
                        type_url=TYPE_URL,
                        value=proto_key.SerializeToString(),
                        key_material_type=tink_pb2.KeyData.SYMMETRIC,
                    ),
                    status=tink_pb2.ENABLED,
                    key_id=1,
                    output_prefix_type=tink_pb2.RAW,
                )
            ],
        )
        handle = cleartext_keyset_handle.from_keyset(keyset)
        self._aead = handle.primitive(streaming_aead.StreamingAead)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        out = _Unclosing()
        with self._aead.new_encrypting_stream(out, associated_data) as enc:
            enc.write(plaintext)
        return out.getvalue()

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        with self._aead.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as dec:
            data: bytes = dec.read()
        return data
