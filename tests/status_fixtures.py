"""A real status service for tests: ``fingerd status-server`` on a UNIX socket in a temporary
directory, run as nobody when the tests run as root (as fingerd-status.service runs as a
transient user), and clients that talk to it as the test's user or as nobody.

The kernel's ``SO_PEERCRED`` is real here: a client run under ``setpriv`` as nobody is nobody
to the server, whatever its request says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO, stop

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
IS_ROOT = os.geteuid() == 0


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET",
                        "STATE_DIRECTORY", "FINGERD_CONFIG", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO)
    env["TZ"] = "UTC"
    return env


class StatusServer:
    """A running ``fingerd status-server``; ``log`` is what it wrote to stderr so far."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.socket = str(directory / "run" / "status.sock")
        self.state = directory / "state"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: list[str] = []

    def start(self) -> StatusServer:
        prefix = AS_NOBODY if IS_ROOT else []
        self._log = []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "fingerd", "status-server", "--socket", self.socket,
             "--state-dir", str(self.state), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=child_env(), cwd="/")
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()
        if not self.wait_for_log("status service ready", 15):
            self.stop()
            raise AssertionError(f"status-server did not start:\n{self.log}")
        return self

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._log.append(line.decode("utf-8", "replace"))

    @property
    def log(self) -> str:
        return "".join(self._log)

    def wait_for_log(self, text: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.1)  # the reader thread may still be catching up
                return text in self.log
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            if self.proc.stderr:
                self.proc.stderr.close()

    def request(self, data: bytes, *, half_close: bool = True, timeout: float = 10) -> bytes:
        """Send raw bytes from this process (the test's UID), read the reply to EOF."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return read_to_eof(sock)


def read_to_eof(sock: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass  # the server closed with our extra bytes unread; what came before is the reply
    return data


RAW_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
data = b""
try:
    while len(data) < 65536:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except ConnectionResetError:
    pass
sys.stdout.buffer.write(data)
"""


def request_as_nobody(server: StatusServer, data: bytes) -> bytes:
    """Send raw bytes from a process running as nobody (needs root)."""
    proc = subprocess.run([*AS_NOBODY, sys.executable, "-c", RAW_CLIENT, server.socket],
                          input=data, capture_output=True, timeout=30, env=child_env(),
                          cwd="/", check=True)
    return proc.stdout


def run_cli(server: StatusServer | str, *args: str, as_nobody: bool = False,
            stdin: bytes | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """``fingerd status ARGS --socket SOCKET``, as the test's user or as nobody."""
    path = server if isinstance(server, str) else server.socket
    prefix = AS_NOBODY if as_nobody else []
    proc = subprocess.run([*prefix, sys.executable, "-m", "fingerd", "status", *args,
                           "--socket", path], input=stdin or b"", capture_output=True,
                          timeout=30, env={**child_env(), **(env or {})}, cwd="/")
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


@contextlib.contextmanager
def status_server(*args: str) -> Iterator[StatusServer]:
    """A status server in a fresh directory that nobody can use (0755 parents; the socket's
    and the state's directories belong to the server's user)."""
    directory = Path(tempfile.mkdtemp(prefix="fingerd-status-test-", dir="/tmp"))
    directory.chmod(0o755)
    for sub in ("run", "state"):
        (directory / sub).mkdir()
        if IS_ROOT:
            os.chown(directory / sub, NOBODY, NOBODY)
    server = StatusServer(directory, *args)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def my_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
