"""``coffer logout`` and the field lines of ``coffer status`` (offline use, boot login)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

Command = Callable[..., argparse.ArgumentParser]


def add_commands(command: Command, cmd_logout: Callable[[argparse.Namespace], int]) -> None:
    command("logout", cmd_logout, "drop cofferd's login, token and offline records")


def _when(t: object) -> str:
    if not isinstance(t, (int, float)):
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def field_lines(status: dict[str, Any]) -> list[str]:
    """What ``status`` says of the login's source, the upstream and offline records."""
    field = status.get("field")
    if not isinstance(field, dict):
        return []
    reachable = field.get("upstream_reachable")
    lines = [
        f"login from:      {field.get('login_source')}",
        f"mode:            {field.get('mode')}"
        f" (reachable: {'unknown' if reachable is None else 'yes' if reachable else 'no'},"
        f" last contact: {_when(field.get('last_contact'))})",
        f"device key:      {'yes' if field.get('device_key') else 'no: records in memory only'}",
    ]
    for r in field.get("records") or []:
        lines.append(
            f"offline record:  {r.get('folder')}/{r.get('filename')} version {r.get('version')},"
            f" lease until {_when(r.get('lease_expires'))}"
        )
    return lines


def identity_lines(status: dict[str, Any]) -> list[str]:
    """What ``status`` says of the device's own key: its id, and whether to enroll again."""
    identity = status.get("identity")
    if "identity" not in status:
        return []
    if not isinstance(identity, dict):
        return ["identity:        none (no coffer-device-identity credential)"]
    note = ""
    if identity.get("new") and not identity.get("enrolled"):
        note = " (new identity: enroll again)"
    elif not identity.get("enrolled"):
        note = " (not enrolled)"
    lines = [
        f"identity:        {identity.get('key_id')}{note}",
        f"public key:      {identity.get('public_key')}",
    ]
    if identity.get("device_id"):
        lines.append(f"device id:       {identity['device_id']}")
    return lines


def print_logout(result: dict[str, Any]) -> str:
    return f"logged out; {result.get('records_erased', 0)} offline record(s) erased"
