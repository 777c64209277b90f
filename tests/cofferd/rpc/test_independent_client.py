"""A client written from docs/protocol.md alone: raw sockets, send_fds, no coffer library.

It plays the document's example session against a real cofferd and checks
each answer against what the document says, so the document and the daemon
cannot drift apart unnoticed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream


class LineClient:
    """One connection: a request per line, one response line per request."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.buffer = b""
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, params: dict[str, Any] | None = None, fd: int | None = None) -> int:
        self.next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        if params is not None:
            request["params"] = params
        line = json.dumps(request).encode("utf-8") + b"\n"
        if fd is None:
            self.sock.sendall(line)
        else:
            # The fd rides on the sendmsg that carries the request line.
            sent = socket.send_fds(self.sock, [line], [fd])
            self.sock.sendall(line[sent:])
        return self.next_id

    def receive(self, request_id: int) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "cofferd closed the connection"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        response: dict[str, Any] = json.loads(line)
        assert response["jsonrpc"] == "2.0"
        assert response["id"] == request_id
        return response

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.receive(self.send(method, params))

    def load(self, params: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        r, w = os.pipe()
        request_id = self.send("load", params, fd=w)
        os.close(w)  # else our own copy would keep the pipe from reaching EOF
        with open(r, "rb") as pipe:
            data = pipe.read()
        return data, self.receive(request_id)

    def upload(self, params: dict[str, Any], content: bytes) -> dict[str, Any]:
        r, w = os.pipe()
        request_id = self.send("upload", params, fd=r)
        os.close(r)

        def feed() -> None:
            with open(w, "wb") as pipe:
                pipe.write(content)

        writer = threading.Thread(target=feed)
        writer.start()
        response = self.receive(request_id)
        writer.join()
        return response


def test_the_documented_example_session(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream
) -> None:
    daemon = cofferd()
    client = LineClient(str(daemon.socket_path))
    try:
        health = client.call("health")["result"]
        assert health["status"] == "ok"
        assert isinstance(health["version"], str)

        refused = client.call("load", {"filename": "model.bin"})["error"]
        assert (refused["code"], refused["message"]) == (401, "Unauthorized")
        assert refused["data"]["detail"]

        account = upstream.publisher
        login = client.call("login", {"email": account.email, "password": account.password})
        assert login["result"] == {"status": "ok"}

        up = client.upload({"filename": "model.bin", "size": 5}, b"hello")["result"]
        assert up == {
            "status": "ok",
            "folder": "models",
            "filename": "model.bin",
            "version": up["version"],
            "size": 5,
            "target": up["target"],
        }
        # The release to sign (docs/trust.md): the small part's size and digest at
        # the top, the rest under custom.coffer.
        assert up["target"]["path"] == "resources/models/model.bin"
        assert up["target"]["length"] == 61  # all of it: 40-byte header, 5 bytes, 16-byte tag
        assert up["target"]["custom"]["coffer"]["version"] == up["version"]
        assert up["target"]["custom"]["coffer"]["plaintext_size"] == 5
        daemon.sign(up)

        data, loaded = client.load({"filename": "model.bin"})
        assert data == b"hello"
        assert loaded["result"] == {
            "folder": "models",
            "filename": "model.bin",
            "version": up["version"],
            "size": 5,
            "from_cache": False,
        }

        inline = client.call("load", {"filename": "model.bin"})["result"]
        assert base64.b64decode(inline["data"]) == b"hello"

        bad = client.call("load", {"filename": "../etc/passwd"})["error"]
        assert (bad["code"], bad["message"]) == (400, "Bad name")

        client.sock.sendall(b"{oops\n")
        parse = client.receive(None)  # type: ignore[arg-type]
        assert parse["error"]["code"] == -32700

        # A notification runs without a response; the next answer is the next request's.
        client.sock.sendall(b'{"jsonrpc": "2.0", "method": "health"}\n')
        status = client.call("status")["result"]
        assert status["authenticated"] is True
        assert status["model_cache_dir"] == daemon.env["COFFER_CACHE_DIR"]
    finally:
        client.close()
