"""Real parts for the web view's tests: ``fingerd web`` on a free loopback port, an HTTP
client (the standard library's ``http.client``) and a raw socket for what no client would send.

Plain functions and a context manager, no fixtures: the test modules use conftest's
``make_config`` and ``run_handler`` for the rest.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import FINGERD, IS_ROOT, env, free_port, stop


class Web:
    """A running ``fingerd web``: its port, process and log (stderr, one line per record)."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path,
                 host: str) -> None:
        self.port, self.proc, self.log_path, self.host = port, proc, log, host

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once ``text`` is in it (bounded in time)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log}"
            time.sleep(0.05)
        return log

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> Reply:
        """One request with http.client (a new connection each time)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return Reply(response.status, dict(response.getheaders()), body,
                         response.getheaders())
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 15.0, shut: bool = False) -> bytes:
        """Send ``data`` as it is, read until the server closes (bounded)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(timeout)
            s.connect((self.host, self.port))
            if data:
                s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            return read_to_eof(s, timeout)


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes,
                 header_list: list[tuple[str, str]]) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.header_list = header_list

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers}, {self.body[:200]!r})"


def read_to_eof(s: socket.socket, timeout: float, limit: int = 1 << 20) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no EOF within {timeout} s; got {data[:300]!r}")
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    line = response.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), response[:200]
    return int(line.split()[1])


def http_request(path: str, *headers: str, method: str = "GET") -> bytes:
    """An HTTP/1.1 request with Host and Connection: close, for raw sockets."""
    lines = [f"{method} {path} HTTP/1.1", "Host: example.org", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def running_web(config: Path, *extra: str, host: str = "127.0.0.1") -> Iterator[Web]:
    """``fingerd web`` on a free port (as nobody when we are root), stopped afterwards."""
    port = free_port(host)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    user = ["--user", "nobody"] if IS_ROOT else []
    with tempfile.NamedTemporaryFile(prefix="fingerd-web-", suffix=".log") as log:
        proc = subprocess.Popen([*FINGERD, "web", "--config", str(config), "--listen", listen,
                                 *user, *extra], env=env(), stderr=log, stdin=subprocess.DEVNULL)
        try:
            # Not just listening: the socket listens before the event loop has its signal
            # handlers, and a SIGHUP sent in between would be lost. The line comes after them.
            web = Web(port, proc, Path(log.name), host)
            web.wait_log("serving the web view on", timeout=20)
            yield web
        finally:
            stop(proc)
