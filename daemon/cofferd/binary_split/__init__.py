"""The binary split: the encrypted format and the big/small split.

- :mod:`cofferd.binary_split.stream`: Tink's AES256_GCM_HKDF_1MB streaming AEAD
  wire format (``docs/format.md``), over chunks, file objects and pipes.
- :mod:`cofferd.binary_split.segment`: the format's layout, sizes and
  one segment's crypto.
- :mod:`cofferd.binary_split.pipeline`: moves fixed-size segments through a
  bounded set of buffers and threads, in order.
- :mod:`cofferd.binary_split.split`: cuts a ciphertext into the small part
  (always the whole header) and the big part.
"""
