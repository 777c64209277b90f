"""packaging/manpage.py: man pages that render cleanly, a completion that completes."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffer.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
EPOCH = "1790000000"  # 2026-09-21


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    subprocess.run(
        [sys.executable, str(REPO / "packaging/manpage.py"), str(out)],
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def command_paths(parser: argparse.ArgumentParser, prefix: str = "coffer") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}"
                yield from command_paths(sub, f"{prefix} {name}")


def render(page: Path) -> tuple[str, str]:
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "200", "MAN_KEEP_FORMATTING": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("page", ["coffer.1", "cofferd.8"])
def test_the_pages_render_without_warnings(generated: Path, page: str) -> None:
    text, warnings = render(generated / page)
    assert warnings == ""
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES"):
        assert f"\n{section}\n" in text
    assert "SEE ALSO" in text
    groff = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(generated / page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert groff.stderr == ""


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
@pytest.mark.parametrize("page", ["coffer.1", "cofferd.8"])
def test_mandoc_lint_is_quiet(generated: Path, page: str) -> None:
    proc = subprocess.run(
        ["mandoc", "-T", "lint", "-W", "warning", str(generated / page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout + proc.stderr == ""


def test_coffer_1_documents_every_command_and_exit_code(generated: Path) -> None:
    text, _ = render(generated / "coffer.1")
    paths = list(command_paths(build_parser()))
    assert "coffer archive seal" in paths
    # The owner's and publisher's tools (cofferd's plugins, python-tuf).
    for path in ("coffer keys generate", "coffer trust init", "coffer trust new"):
        assert path in paths, path
    for path in paths:
        assert f"\n   {path}\n" in text, path  # a subsection per command
    assert "--password-stdin" in text
    assert "--output OUT" in text
    exit_status = text.split("\nEXIT STATUS\n")[1].split("\nFILES\n")[0]
    for code in ("0", "3", "9", "130"):
        assert re.search(rf"^ +{code} +\S", exit_status, re.MULTILINE), code
    assert "2026-09-21" in text


def test_cofferd_8_has_its_options(generated: Path) -> None:
    text, _ = render(generated / "cofferd.8")
    assert "--socket SOCKET" in text
    assert "--config CONFIG" in text
    assert "coffer(1)" in text


def test_the_output_is_reproducible(generated: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "packaging/manpage.py"), str(tmp_path)],
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
        check=True,
        capture_output=True,
        timeout=60,
    )
    for name in ("coffer.1", "cofferd.8", "coffer.bash-completion"):
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes()


def complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What the completion offers for ``words`` (the last is the word being typed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (
        f"source '{script}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_coffer\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=cwd,
    )
    assert proc.stderr == ""
    return sorted(line for line in proc.stdout.splitlines() if line)


def test_the_completion_is_valid_bash(generated: Path) -> None:
    subprocess.run(["bash", "-n", str(generated / "coffer.bash-completion")], check=True)


def test_the_completion_completes_commands_and_options(generated: Path, tmp_path: Path) -> None:
    script = generated / "coffer.bash-completion"
    assert complete(script, "coffer", "lo") == ["load", "login", "logout"]
    assert complete(script, "coffer", "--socket", "/run/x.sock", "un") == [
        "unlock",
        "unlock-status",
    ]
    assert complete(script, "coffer", "--ti") == ["--timeout"]
    assert complete(script, "coffer", "load", "--f") == ["--folder"]
    assert complete(script, "coffer", "archive", "") == ["inspect", "seal"]
    assert complete(script, "coffer", "trust", "") == [
        "init",
        "new",
        "publishers",
        "rotate",
        "status",
    ]
    assert "--sign-key" in complete(script, "coffer", "upload", "--")
    assert "--id" in complete(script, "coffer", "archive", "seal", "--")
    (tmp_path / "model.bin").write_bytes(b"")
    assert complete(script, "coffer", "load", "-o", "mo", cwd=tmp_path) == ["model.bin"]
