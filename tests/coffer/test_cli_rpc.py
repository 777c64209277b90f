"""``coffer rpc METHOD [PARAMS_JSON]`` as a real subprocess against a real cofferd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coffer.cli import ExitCode
from fixtures.daemon import CofferdProcess
from fixtures.openrpc import check_response, openrpc_document

COFFER = str(Path(sys.executable).parent / "coffer")


def coffer_rpc(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COFFER_SOCKET"}
    return subprocess.run(
        [COFFER, "--socket", str(sock), "rpc", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def sock(cofferd: Callable[..., CofferdProcess]) -> Path:
    return cofferd().socket_path


def test_a_result_is_printed_as_json(sock: Path) -> None:
    done = coffer_rpc(sock, "health")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok"
    check_response("health", {"result": result})


def test_rpc_discover_prints_the_document(sock: Path) -> None:
    done = coffer_rpc(sock, "rpc.discover")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == openrpc_document()


def test_an_error_is_json_on_stderr_with_its_exit_code(sock: Path) -> None:
    done = coffer_rpc(sock, "load", '{"filename": "../etc/passwd"}')
    assert done.returncode == ExitCode.BAD_REQUEST
    assert done.stdout == ""
    error = json.loads(done.stderr)
    assert error["code"] == 400
    assert "invalid filename" in error["data"]["detail"]

    done = coffer_rpc(sock, "load", '{"filename": "nothing.bin"}')
    assert done.returncode == ExitCode.UNAUTHORIZED  # not logged in
    assert json.loads(done.stderr)["code"] == 401

    done = coffer_rpc(sock, "no.such.method")
    assert done.returncode == ExitCode.OTHER
    assert json.loads(done.stderr)["code"] == -32601


@pytest.mark.parametrize("params", ["{oops", "[1, 2]", '"text"'])
def test_params_must_be_a_json_object(sock: Path, params: str) -> None:
    done = coffer_rpc(sock, "health", params)
    assert done.returncode == ExitCode.USAGE
    assert "PARAMS_JSON" in done.stderr


def test_no_daemon_is_exit_3(tmp_path: Path) -> None:
    done = coffer_rpc(tmp_path / "none.sock", "health")
    assert done.returncode == ExitCode.DAEMON_UNAVAILABLE
    assert json.loads(done.stderr)["code"] is None
