"""Real parts for the backend tests: config files, the handler on a socket, ``fingerd serve``,
HTTP(S) servers on loopback, a test CA, namespaces, unprivileged runs.

Plain functions and context managers, no pytest fixtures, so that any test module can use them
without conftest.py (which belongs to the core tests). Nothing here mocks anything: every
helper starts the real program or server and talks to it over a real socket.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import child_path, free_port, recv_all, require, stop

from fingerd import tomlout
from fingerd.testing import make_backend  # noqa: F401 (for the backend tests)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The product's interpreter, by path: `python3` on PATH may be a pyenv shim, and the test
# venv's interpreter imports `re` at start-up (its editable install's .pth).
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY_UID = 65534

# What a child fingerd sees: the repository on its path, no journal, no config from outside.
_DROPPED_ENV = ("JOURNAL_STREAM", "FINGERD_CONFIG", "CACHE_DIRECTORY", "LISTEN_FDS",
                "LISTEN_PID", "NOTIFY_SOCKET", "REMOTE_ADDR", "PYTHONPATH")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PYTHONPATH"] = child_path()
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env


# -- config ---------------------------------------------------------------------------------------

def config_text(backends: list[dict[str, object]], server: dict[str, object] | None = None) -> str:
    """A fingerd.toml with ``[server]`` and one ``[[backend]]`` per table."""
    lines = ["[server]"]
    lines += [f"{tomlout.key(k)} = {tomlout.value(v)}" for k, v in (server or {}).items()]
    for table in backends:
        lines += ["", "[[backend]]"]
        lines += [f"{tomlout.key(k)} = {tomlout.value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, backends: list[dict[str, object]],
                 server: dict[str, object] | None = None) -> Path:
    path.write_text(config_text(backends, server))
    path.chmod(0o644)
    return path




# -- the per-connection handler on a real socket --------------------------------------------------

class Reply:
    def __init__(self, data: bytes, log: str, returncode: int) -> None:
        self.data, self.log, self.returncode = data, log, returncode

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def run_handler(config: Path, query: bytes, env: dict[str, str] | None = None,
                timeout: float = 30, prefix: list[str] | None = None) -> Reply:
    """Run ``fingerd --config CONFIG`` with one end of a socketpair as its stdin and stdout,
    as systemd (``Accept=yes``) or inetd would, send ``query`` and read the reply to EOF."""
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([*(prefix or []), PYTHON, "-m", "fingerd", "--config",
                                 str(config)], stdin=theirs, stdout=theirs,
                                stderr=subprocess.PIPE, env=child_env(env), cwd="/")
        theirs.close()
        try:
            ours.sendall(query)
            data = recv_all(ours, 16 * 1024 * 1024, timeout)
            _, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return Reply(data, err.decode("utf-8", "replace"), proc.returncode)


def run_query(config: Path, *words: str, env: dict[str, str] | None = None,
              prefix: list[str] | None = None, timeout: float = 30) -> Reply:
    """``fingerd query [/W] [USER]``: the bytes a client would get, without a socket."""
    proc = subprocess.run([*(prefix or []), PYTHON, "-m", "fingerd", "query", "--config",
                           str(config), *words], capture_output=True, env=child_env(env),
                          timeout=timeout, cwd="/")
    return Reply(proc.stdout, proc.stderr.decode("utf-8", "replace"), proc.returncode)


# -- fingerd serve --------------------------------------------------------------------------------

def finger(port: int, query: bytes, host: str = "127.0.0.1", timeout: float = 30) -> bytes:
    """What a finger client gets: connect, send the query line, read to EOF."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(query)
        return recv_all(sock, 16 * 1024 * 1024, timeout)


class Served:
    """A running ``fingerd serve``: its port, and the log it has written so far."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port
        self._log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._log.append(line.decode("utf-8", "replace"))

    @property
    def log(self) -> str:
        return "".join(self._log)

    def query(self, query: bytes, timeout: float = 30) -> bytes:
        return finger(self.port, query, timeout=timeout)

    def wait_for_log(self, text: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            time.sleep(0.02)
        return False


def serve_user_args() -> list[str]:
    """``fingerd serve`` refuses to run as root: it must switch to an unprivileged user."""
    return ["--user", "nobody"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def fingerd_serve(config: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Start ``python -m fingerd serve`` on a free loopback port; stop it with SIGTERM.

    As root it runs as nobody, so everything it reads must be readable by nobody (see
    :func:`public_dir`).
    """
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen([PYTHON, "-m", "fingerd", "serve", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}", *serve_user_args()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=child_env(env), cwd="/")
        served = Served(proc, port)
        if served.wait_for_log("serving on", timeout=15):
            break
        proc.kill()
        proc.wait()
        if "cannot listen" not in served.log:  # anything but a lost race for the port
            raise AssertionError(f"fingerd serve did not start:\n{served.log}")
    else:
        raise AssertionError("no free port for fingerd serve")
    try:
        yield served
    finally:
        stop(proc)
        served._reader.join(5)
        if proc.stderr:
            proc.stderr.close()


def within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s result, or a test failure if it does not return in time. For code that
    would hang if a guard regressed (a FIFO opened without O_NONBLOCK): the test fails
    instead of hanging (the stuck thread is a daemon, abandoned at exit)."""
    result: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:  # handed to the test
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not return within {seconds} s")
    if errors:
        raise errors[0]
    return result[0]


# -- files readable by an unprivileged service user -----------------------------------------------

@contextlib.contextmanager
def public_dir() -> Iterator[Path]:
    """A temporary directory that ``nobody`` can read (pytest's tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="fingerd-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unprivileged_prefix() -> list[str]:
    """A command prefix that runs a program as nobody when we are root (file permissions do
    not apply to root), and nothing when we are not root already."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups",
            "--"]


def needs_root(why: str) -> None:
    """Skip (with the reason) unless root; in CI (CI=true, where we run as root) fail instead."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("unshare", "mount", "ip"):
        if shutil.which(tool) is None:
            missing.append(tool)
    require(not missing, f"{why}: needs {', '.join(missing)}")


# -- HTTP and HTTPS servers on loopback -----------------------------------------------------------

Route = Callable[["StatusHandler"], None]


class StatusHandler(http.server.BaseHTTPRequestHandler):
    """Dispatches to the server's routes by path prefix; records every request."""

    server: StatusServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that connects and says nothing does not keep a thread forever

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        for prefix, route in sorted(self.server.routes.items(), key=lambda r: -len(r[0])):
            if self.path.startswith(prefix):
                route(self)
                return
        self.send_text("not found", 404)

    def send_text(self, body: str | bytes, status: int = 200,
                  content_type: str = "text/plain; charset=utf-8",
                  headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_text("", status, headers={"Location": location})

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are recorded in server.requests


class StatusServer(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1, port 0, in a thread; HTTPS with ``tls``."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), StatusHandler)
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()  # slow routes wait on this, so stopping is quick
        if tls is not None:
            # The handshake happens in the handler's thread, on its first read: a client that
            # never speaks must not block accept() and with it the server's shutdown.
            self.socket = tls.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up early (our timeouts and caps do that on purpose)

    def __enter__(self) -> StatusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class TestCA:
    """A CA and a server certificate made with the openssl command line, for loopback TLS."""

    __test__ = False  # not a test class

    def __init__(self, directory: Path, names: tuple[str, ...] = ("localhost",),
                 ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
        require(shutil.which("openssl") is not None,
                "needs the openssl command (Debian package openssl)")
        self.dir = directory
        self.ca_cert = directory / "ca.pem"
        self.ca_key = directory / "ca.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", *ec, "-keyout", self.ca_key, "-out", self.ca_cert,
                 "-days", "2", "-subj", "/CN=fingerd test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.serial = 1
        self.server_cert, self.server_key = self.issue("server", names, ips)

    def issue(self, stem: str, names: tuple[str, ...], ips: tuple[str, ...]) -> tuple[Path, Path]:
        key, csr, cert = (self.dir / f"{stem}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.dir / f"{stem}.ext"
        alt = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{i}" for i in ips)])
        ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={(names or ips)[0]}")
        self.serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                 "-set_serial", str(self.serial), "-days", "2", "-extfile", ext, "-out", cert)
        return cert, key

    def server_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert or self.server_cert, key or self.server_key)
        return context


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


# -- hostile servers ------------------------------------------------------------------------------

Step = tuple[str, object]  # ("read", None) | ("send", bytes) | ("sleep", s) | ("reset", None)


class RawServer:
    """A raw TCP server on 127.0.0.1, port 0, that plays ``script`` to every connection,
    whatever was asked: for what no real HTTP server would send. Steps: ``("read", None)``
    reads the request (up to its blank line, bounded); ``("send", data)`` sends bytes, where
    ``@SELF@`` becomes this server's ``127.0.0.1:port``; ``("sleep", seconds)`` waits;
    ``("reset", None)`` closes with an RST. After the last step the connection is closed.
    A client that hangs up ends the script early, silently."""

    def __init__(self, script: Sequence[Step] = ()) -> None:
        self.script = list(script)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._play, args=(conn, list(self.script)),
                             daemon=True).start()

    def _play(self, conn: socket.socket, script: list[Step]) -> None:
        me = f"127.0.0.1:{self.port}".encode()
        with conn:
            conn.settimeout(2)
            try:
                for kind, arg in script:
                    if kind == "read":
                        request = b""
                        while b"\r\n\r\n" not in request and len(request) < 65536:
                            data = conn.recv(65536)
                            if not data:
                                break
                            request += data
                    elif kind == "send":
                        assert isinstance(arg, bytes)
                        conn.sendall(arg.replace(b"@SELF@", me))
                    elif kind == "sleep":
                        assert isinstance(arg, (int, float))
                        if self.stopping.wait(arg):
                            return
                    elif kind == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        return
                    else:
                        raise AssertionError(f"unknown step {kind!r}")
            except OSError:
                pass  # the client hung up or reset: what clients may do


# -- fingerd as installed, on Debian's interpreter ------------------------------------------------

@functools.cache
def installed_site() -> Path:
    """fingerd as the .deb holds it: this checkout's wheel, built with Debian's python3-build
    and installed with python3-installer as pybuild does, byte-compiled as py3compile does.
    Returns the directory that holds the installed ``fingerd`` package. Built once per test
    session, removed at exit."""
    for module, package in (("build", "python3-build"), ("installer", "python3-installer")):
        found = subprocess.run([SYSTEM_PYTHON, "-I", "-c", f"import {module}"],
                               capture_output=True, timeout=60).returncode == 0
        require(found, f"needs Debian's {package} to install fingerd as the .deb does")
    root = Path(tempfile.mkdtemp(prefix="fingerd-installed-"))
    atexit.register(shutil.rmtree, root, True)
    src = root / "src"
    shutil.copytree(REPO / "fingerd", src / "fingerd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(root)}

    def python(*args: str) -> None:
        proc = subprocess.run([SYSTEM_PYTHON, *args], capture_output=True, text=True, env=env,
                              cwd=root, timeout=300)
        assert proc.returncode == 0, f"python3 {' '.join(args[:2])}: {proc.stdout}{proc.stderr}"

    python("-m", "build", "--skip-dependency-check", "--no-isolation", "--wheel", "--outdir",
           str(root / "wheel"), str(src))
    [wheel] = (root / "wheel").glob("fingerd-*.whl")
    python("-m", "installer", "--destdir", str(root / "dest"), str(wheel))
    [package] = (root / "dest").glob("**/fingerd/__init__.py")
    python("-m", "compileall", "-q", str(package.parent))
    return package.parent.parent


def run_installed(code: str, *args: str, env: dict[str, str] | None = None,
                  flags: Sequence[str] = (), stdin: int | None = None,
                  stdout: int | None = None, timeout: float = 60
                  ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as fingerd runs on a host: ``/usr/bin/python3 -I`` (isolated: no PYTHON*
    variables, no user site, no venv), with the installed package (:func:`installed_site`)
    first on ``sys.path``, as /usr/lib/python3/dist-packages is for the .deb. ``flags`` go
    to the interpreter (``-X importtime``: ``-I`` ignores PYTHON* variables)."""
    site = installed_site()
    prelude = f"import sys; sys.path.insert(0, {str(site)!r})\n"
    return subprocess.run([SYSTEM_PYTHON, "-I", *flags, "-c", prelude + code, *args], text=True,
                          stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C",
                                                       **(env or {})},
                          timeout=timeout, cwd="/")
