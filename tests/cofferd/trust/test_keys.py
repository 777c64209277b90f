"""Key files: made whole or not at all, never overwritten, refused when exposed or malformed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from securesystemslib.signer import SSlibKey

from cofferd.trust import keys
from cofferd.trust.keys import KeyFileError


def _raw_private(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def test_generate_writes_a_0600_private_key_and_tuf_public_key(tmp_path: Path) -> None:
    public = keys.generate(tmp_path / "publisher")
    key_file, pub_file = tmp_path / "publisher.key", tmp_path / "publisher.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    obj = json.loads(pub_file.read_text())
    assert obj == {
        "keytype": "ed25519",
        "scheme": "ed25519",
        "keyval": {"public": obj["keyval"]["public"]},
    }
    # The keyid is python-tuf's, from the object alone.
    assert keys.load_public(pub_file).keyid == public.keyid
    assert SSlibKey.from_dict(public.keyid, dict(obj)).keyid == public.keyid
    signer = keys.load_signer(key_file)
    assert signer.public_key.keyid == public.keyid
    # What it signs verifies under the public key file.
    sig = signer.sign(b"release")
    keys.load_public(pub_file).verify_signature(sig, b"release")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("existing", ["publisher.key", "publisher.pub"])
def test_generate_never_overwrites(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists"):
        keys.generate(tmp_path / "publisher")
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_generate_refuses_over_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "publisher.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="already exists"):
        keys.generate(tmp_path / "publisher")
    assert not (tmp_path / "elsewhere").exists()


def test_generate_leaves_nothing_when_the_second_file_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = keys.write_new

    def failing(path: Path, data: bytes, mode: int) -> None:
        if path.suffix == ".pub":
            raise KeyFileError(f"cannot write {path}: No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(keys, "write_new", failing)
    with pytest.raises(KeyFileError, match="No space"):
        keys.generate(tmp_path / "publisher")
    assert list(tmp_path.iterdir()) == []


def test_generate_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no directory"):
        keys.generate(tmp_path / "nowhere" / "publisher")


def test_two_keys_differ(tmp_path: Path) -> None:
    a, b = keys.generate(tmp_path / "a"), keys.generate(tmp_path / "b")
    assert a.keyid != b.keyid


def test_load_signer_refuses_a_world_readable_key(tmp_path: Path) -> None:
    keys.generate(tmp_path / "p")
    os.chmod(tmp_path / "p.key", 0o604)
    with pytest.raises(KeyFileError, match=r"world-readable \(mode 0604\).*chmod 600"):
        keys.load_signer(tmp_path / "p.key")
    os.chmod(tmp_path / "p.key", 0o640)  # a group (systemd's credentials are 0440)
    keys.load_signer(tmp_path / "p.key")


def test_load_signer_missing_unreadable_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no private key"):
        keys.load_signer(tmp_path / "absent.key")
    with pytest.raises(KeyFileError, match="not a regular file"):
        keys.load_signer(tmp_path)
    if os.geteuid() != 0:  # root reads any file
        keys.generate(tmp_path / "p")
        os.chmod(tmp_path / "p.key", 0)
        with pytest.raises(KeyFileError, match="cannot read private key"):
            keys.load_signer(tmp_path / "p.key")


def test_errors_never_quote_a_key(tmp_path: Path) -> None:
    keys.generate(tmp_path / "p")
    pem = (tmp_path / "p.key").read_bytes()
    raw = _raw_private(tmp_path / "p.key")
    # A key file damaged in the middle: the message names the file only.
    broken = tmp_path / "broken.key"
    fd = os.open(broken, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem[:60] + b"!" + pem[61:])
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        keys.load_signer(broken)
    text = str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert "not a private key" in text
    for secret in (pem[27:90].decode(), raw.hex(), pem.decode()):
        assert secret not in text
    assert info.value.__cause__ is None


def test_load_signer_refuses_other_keys(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    path = tmp_path / "ec.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    os.close(fd)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        keys.load_signer(path)
    enc = tmp_path / "enc.key"
    fd = os.open(enc, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
    )
    os.close(fd)
    with pytest.raises(KeyFileError, match="is encrypted") as info:
        keys.load_signer(enc)
    assert "passphrase" not in str(info.value)
    # The public key file is not a private key.
    keys.generate(tmp_path / "p")
    os.chmod(tmp_path / "p.pub", 0o600)
    with pytest.raises(KeyFileError, match="not a private key"):
        keys.load_signer(tmp_path / "p.pub")


def test_load_signer_from_a_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.generate(tmp_path / "p")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "publisher").write_bytes((tmp_path / "p.key").read_bytes())
    os.chmod(creds / "publisher", 0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    signer = keys.load_signer(Path(os.environ["CREDENTIALS_DIRECTORY"]) / "publisher")
    assert signer.public_key.keyid == keys.load_public(tmp_path / "p.pub").keyid


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"keytype": "ed25519", "scheme": "ed25519"}',
        b'{"keytype": "rsa", "scheme": "ed25519", "keyval": {"public": "00"}}',
        b'{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "zz"}}',
        b'{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "0011"}}',
        b'{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": 5}}',
        b'{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "00"}, "x": 1}',
        b"\xff\xfe",
    ],
)
def test_load_public_refuses_malformed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pub"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match="not a public key file"):
        keys.load_public(path)


def test_load_public_refuses_upper_case_hex(tmp_path: Path) -> None:
    keys.generate(tmp_path / "p")
    obj = json.loads((tmp_path / "p.pub").read_text())
    obj["keyval"]["public"] = obj["keyval"]["public"].upper()
    (tmp_path / "p.pub").write_text(json.dumps(obj))
    with pytest.raises(KeyFileError, match="not a public key file"):
        keys.load_public(tmp_path / "p.pub")
