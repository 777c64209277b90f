"""``coffer archive``: seal a ``docker save`` tar into an encrypted image archive, or inspect one.

A plugin of the ``coffer`` CLI, shipped with cofferd because it needs the
daemon's crypto: cofferd's distribution registers :func:`add_parser` in the
``coffer.commands`` entry-point group, and :mod:`coffer.cli` adds it. Without
cofferd installed, ``coffer archive`` does not exist.

``coffer archive seal IMAGE_TAR OUT --id ID`` is a publisher's command: it
talks to the upstream directly (``--upstream`` / ``COFFER_UPSTREAM_URL``,
``--email`` / ``COFFER_EMAIL``, the password from ``--password-stdin``,
``COFFER_PASSWORD`` or a prompt), not to a cofferd. Steps, so that no archive
exists without its key and no key is left registered for nothing:

1. log in (wrong credentials fail before any work);
2. encrypt the tar with a fresh key, streaming, into a temp file beside OUT,
   checking on the way that the tar is a ``docker save`` archive; fsync;
3. register the key (``PUT /v1/archives/{id}/key``); a conflict means the id
   already has another key: refused, the temp file removed, OUT untouched;
4. rename the temp file to OUT and fsync the directory;
5. with ``--sign-key``: sign the archive's release (its file's length and
   sha256, its key's commitment: docs/trust.md) into the publishers role and
   publish it through cofferd (``--socket``), as ``coffer upload`` does. The
   key is loaded, and its delegation checked through cofferd, before step 1.
   Without a key the seal is refused unless ``--unsigned`` is given.

The key is printed nowhere. ``coffer archive inspect FILE`` shows the id, the
format version and the sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from coffer.atomic import atomic_file
from coffer.cli import (
    CommandError,
    ExitCode,
    ReleaseSigner,
    add_signing_options,
    exit_code_for,
    read_password,
    release_signer,
)
from coffer.client import Client
from coffer.errors import CofferRPCError, error_from_wire
from coffer.names import BadName, check_name
from coffer.progress import progress_on_terminal
from cofferd import errors
from cofferd.binary_split import archive, stream
from cofferd.binary_split.archive import ArchiveInfo
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.dispatch.errors import to_rpc_error
from cofferd.trust.release import ArchiveRelease, key_commitment


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``archive seal`` and ``archive inspect`` to the ``coffer`` CLI."""
    parser = subparsers.add_parser("archive", help="encrypted Docker image archives")
    sub = parser.add_subparsers(dest="archive_command", required=True, metavar="ACTION")

    p = sub.add_parser(
        "seal",
        help="encrypt a `docker save` tar and register its key upstream (publishers)",
        description="Encrypt IMAGE_TAR into OUT with a fresh key and register the key "
        "upstream for --id. OUT is written only when everything succeeded.",
    )
    p.add_argument("image_tar", metavar="IMAGE_TAR", help="a tar made by `docker save`")
    p.add_argument("out", metavar="OUT", help="the archive to write")
    p.add_argument("--id", required=True, dest="archive_id", help="the archive id")
    p.add_argument("--upstream", metavar="URL", help="default: $COFFER_UPSTREAM_URL")
    p.add_argument("--email", help="a publisher account; default: $COFFER_EMAIL")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line of standard input "
        "(else $COFFER_PASSWORD, else a prompt)",
    )
    add_signing_options(p)
    p.set_defaults(handler=cmd_seal)

    p = sub.add_parser("inspect", help="show an archive's id, format version and sizes")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=cmd_inspect)


def _setting(value: str | None, env: str, what: str) -> str:
    found = value or os.environ.get(env, "")
    if not found:
        raise CommandError(f"no {what}: give --{what} or set {env}", ExitCode.USAGE)
    return found


def _password(args: argparse.Namespace) -> str:
    if not args.password_stdin and os.environ.get("COFFER_PASSWORD"):
        return os.environ["COFFER_PASSWORD"]
    return read_password(args)


def cmd_seal(args: argparse.Namespace) -> int:
    try:
        archive_id = check_name(args.archive_id, "archive id")
    except BadName as exc:
        raise CommandError(str(exc), ExitCode.BAD_REQUEST) from exc
    url = _setting(args.upstream, "COFFER_UPSTREAM_URL", "upstream")
    args.email = _setting(args.email, "COFFER_EMAIL", "email")
    out = Path(args.out)
    if out.is_dir():
        raise CommandError(f"{out} is a directory", ExitCode.USAGE)
    signer: ReleaseSigner | None = release_signer(args)
    if signer is not None:
        with Client(args.socket, timeout=args.timeout) as c:
            signer.check_archive(c, archive_id)
            # cofferd publishes the signed release as its logged-in account.
            if not c.status().get("authenticated"):
                raise CommandError(
                    "cofferd is not logged in: `coffer login` as a publisher first, "
                    "so it can publish the signed release",
                    ExitCode.UNAUTHORIZED,
                )
    password = _password(args)
    try:
        result = _seal(Path(args.image_tar), out, archive_id, url, args.email, password)
    except errors.Conflict as exc:
        raise CommandError(
            f"archive id {archive_id} already has a different key upstream; "
            f"choose another --id ({out} was not written)",
            ExitCode.CONFLICT,
        ) from exc
    except errors.CofferError as exc:
        # The exit code of the CLI's own mapping, through the wire code cofferd gives exc.
        code = exit_code_for(error_from_wire({"code": to_rpc_error(exc).code}))
        raise CommandError(f"{exc} ({out} was not written)", code) from exc
    text = (
        f"sealed {args.image_tar} into {out}: archive id {archive_id}, "
        f"{result['size']} bytes; images: {', '.join(result['images']) or '(untagged)'}"
    )
    target = result.pop("target")
    if signer is None:
        text += "; unsigned: devices that check releases will not unlock it"
    else:
        result["signed"] = _sign(args, signer, target, out)
        text += f"; signed into publishers version {result['signed'].get('version')}"
    print(json.dumps(result, sort_keys=True) if args.json else text)
    return 0


def _sign(
    args: argparse.Namespace, signer: ReleaseSigner, target: dict[str, Any], out: Path
) -> dict[str, Any]:
    try:
        with Client(args.socket, timeout=args.timeout) as c:
            return signer.publish(c, target)
    except CommandError as exc:
        raise CommandError(_unsigned(out, exc.detail), exc.exit_code) from exc
    except CofferRPCError as exc:
        raise CommandError(_unsigned(out, exc.detail), exit_code_for(exc)) from exc


def _unsigned(out: Path, why: str) -> str:
    return (
        f"{out} is sealed and its key registered, but its release is NOT signed, so "
        f"devices will not unlock it: {why}; seal it again under a new --id to sign it"
    )


class _Digest:
    """The archive file as it is written: its length and SHA-256 (the signed target's)."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self.sha256 = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes | memoryview) -> int:
        written = self._dst.write(data)
        if written:  # (None: a full non-blocking file took nothing)
            self.sha256.update(memoryview(data)[:written])
            self.length += written
        return written


def _seal(
    tar: Path, out: Path, archive_id: str, url: str, email: str, password: str
) -> dict[str, Any]:
    client = ApiClient(url)
    try:
        client.login(email, password)
        key = stream.new_key()
        with tar.open("rb") as src:
            total = os.fstat(src.fileno()).st_size
            reader = archive.ManifestReader()
            with atomic_file(out) as dst, progress_on_terminal(f"sealing {tar.name}") as show:
                digest = _Digest(dst)
                archive.seal(
                    src,
                    digest,  # type: ignore[arg-type]
                    archive_id,
                    key,
                    on_progress=lambda done: show(done, total) if show else None,
                    tap=reader.feed,
                )
                try:
                    images = reader.images()
                except errors.BadRequest as exc:
                    raise errors.BadRequest(f"{tar} is not a `docker save` archive: {exc}") from exc
                # Registered only once the archive is whole on disk; renamed only once registered.
                client.put_archive_key(archive_id, key)
    finally:
        client.close()
    release = ArchiveRelease(
        archive_id=archive_id,
        length=digest.length,
        sha256=digest.sha256.hexdigest(),
        key_commitment=key_commitment(key, stream.archive_associated_data(archive_id)),
    )
    return {
        "archive_id": archive_id,
        "file": str(out),
        "size": out.stat().st_size,
        "images": [tag for image in images for tag in image.tags or (image.id,)],
        "target": {"path": release.path, **release.to_target()},
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    with open(args.file, "rb") as src:
        try:
            info = archive.inspect(src, os.fstat(src.fileno()).st_size)
        except errors.DecryptionError as exc:
            raise CommandError(f"{args.file}: {exc}") from exc
    if args.json:
        print(json.dumps(_as_dict(info), sort_keys=True))
    else:
        print(_as_text(info))
    return 0


def _as_dict(info: ArchiveInfo) -> dict[str, Any]:
    return {
        "archive_id": info.archive_id,
        "format_version": info.version,
        "file_size": info.file_size,
        "header_size": info.header_size,
        "stream_size": info.stream_size,
        "segments": info.segments,
        "plaintext_size": info.plaintext_size,
    }


def _as_text(info: ArchiveInfo) -> str:
    return "\n".join(
        [
            f"archive id:     {info.archive_id}",
            f"format version: {info.version}",
            f"file size:      {info.file_size} bytes",
            f"header:         {info.header_size} bytes",
            f"encrypted:      {info.stream_size} bytes in {info.segments} segment(s)",
            f"image tar:      {info.plaintext_size} bytes",
        ]
    )
