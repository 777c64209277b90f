"""The release signer ``coffer upload --sign-key`` and ``coffer archive seal --sign-key`` use.

``coffer`` (the client package, standard library only) finds it through the
``coffer.release_signers`` entry point, as it finds commands, and never
imports python-tuf itself (the interface: :class:`coffer.cli.ReleaseSigner`).
:func:`release_signer` loads the key (a file or a systemd credential) before
anything is uploaded; ``check_resource`` / ``check_archive`` ask cofferd for
the verified metadata and check that the owner delegated this key the path,
also before; ``publish`` signs the target cofferd answered and publishes it
(:mod:`cofferd.trust.publish`). The key stays in this process.

Errors are :class:`coffer.cli.CommandError` with the CLI's exit codes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from coffer.cli import CommandError, ExitCode
from coffer.client import Client
from cofferd.trust import publish
from cofferd.trust.keys import KeyFileError, load_signer
from cofferd.trust.owner import PUBLISHERS_ROLE, default_expiry
from cofferd.trust.publish import NotDelegated, PublishError, RaceLost, RoleUntrusted
from cofferd.trust.release import archive_path, resource_path

__all__ = ["TufReleaseSigner", "command_error", "release_signer"]


def command_error(exc: PublishError) -> CommandError:
    """The CLI's line and exit status for a release that was not signed or published."""
    if isinstance(exc, NotDelegated):
        return CommandError(str(exc), ExitCode.UNAUTHORIZED)
    if isinstance(exc, RoleUntrusted):
        return CommandError(str(exc), ExitCode.UPSTREAM)
    if isinstance(exc, RaceLost):
        return CommandError(str(exc), ExitCode.CONFLICT)
    return CommandError(str(exc), ExitCode.BAD_REQUEST)


class TufReleaseSigner:
    """A publisher's key, loaded, and what to do with it."""

    def __init__(self, key_path: str | os.PathLike[str], expires_days: int | None = None) -> None:
        try:
            self._signer = load_signer(key_path)
        except KeyFileError as exc:
            raise CommandError(str(exc)) from exc
        self._expires_days = expires_days

    def check_path(self, client: Client, path: str) -> None:
        """Refuse now, before an upload, what publishing would refuse after it."""
        try:
            publish.check_delegated(client.trust_metadata(PUBLISHERS_ROLE), path, self._signer)
        except PublishError as exc:
            raise command_error(exc) from exc

    def check_resource(self, client: Client, folder: str, name: str) -> None:
        self.check_path(client, resource_path(folder, name))

    def check_archive(self, client: Client, archive_id: str) -> None:
        self.check_path(client, archive_path(archive_id))

    def publish(self, client: Client, target: Mapping[str, Any]) -> dict[str, Any]:
        """Sign ``target`` into the publishers role and publish it: ``{"role", "version"}``."""
        try:
            return publish.publish_release(
                client, target, self._signer, expires=default_expiry(self._expires_days)
            )
        except PublishError as exc:
            raise command_error(exc) from exc


def release_signer(key_path: str, expires_days: int | None = None) -> TufReleaseSigner:
    """The ``coffer.release_signers`` entry point: a signer for ``key_path``."""
    return TufReleaseSigner(key_path, expires_days)
