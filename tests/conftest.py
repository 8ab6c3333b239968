"""Shared fixtures: run fingerd the way systemd and people do, over real sockets.

- ``make_config(text)``: write a fingerd.toml into the test's directory, return its path.
- ``run_handler(config, data)``: one handler process on one end of a real socketpair (fd 0 and 1
  are the socket, as with ``StandardInput=socket``); returns its answer, exit code and stderr.
- ``inetd(config)``: ``systemd-socket-activate --inetd -a`` on a free loopback port, starting the
  handler per connection exactly as ``fingerd@.service`` does; yields the port.
- ``serve(config)``: ``fingerd serve`` on a free loopback port, ready once it said so; returns a
  ``Served`` (port, process, its log so far).

Where tests run, and the markers that say why one cannot
--------------------------------------------------------
The suite runs in two places. ``make check`` (and CI, ``CI=true``, as root) runs every test.
The Debian package build (``dpkg-buildpackage``, debian/rules) runs them again, the way a buildd
or sbuild does: as any user (often not root), with the network down but for loopback, with
only the Build-Depends installed. A test that cannot run there carries one marker naming what
it needs (described in pyproject.toml), and the package build deselects them:

- ``@pytest.mark.root``: root itself (setpriv or ``--user`` to another account, chown to
  another account, mounts, ``systemd-analyze`` creating /run/systemd/, apt).
- ``@pytest.mark.netns``: a private network namespace (root, ``unshare``, ``ip``), e.g. to own
  port 79 for the real ``finger`` client.
- ``@pytest.mark.systemd``: a booted Debian under ``systemd-nspawn`` (root, debootstrap); the
  .deb installed there.
- ``@pytest.mark.browser``: headless Chromium (not a Build-Depends: a 200 MB browser).

The first three need root, so such a test skips, saying which marker, when the suite runs as
another user (and fails in CI). Every unmarked test must run in the package build: a program
it runs comes from a package in Build-Depends (``<!nocheck>`` when only tests use it), it
talks to loopback only, and it runs as root and as a normal user alike. To skip for any
other reason, use ``require(condition, reason)``: it skips with the reason, but fails where
everything must run (``CI=true``, or ``FINGERD_TEST_NO_SKIP=1``, which debian/rules sets). There,
any other skip (``pytest.skip``, ``importorskip``) fails too.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FINGERD = [sys.executable, "-m", "fingerd"]
IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"
#: Where every selected test must run: CI, and the package build (debian/rules).
MUST_RUN = IN_CI or os.environ.get("FINGERD_TEST_NO_SKIP") == "1"
WHERE = "CI" if IN_CI else "the package build (FINGERD_TEST_NO_SKIP=1)"

#: The markers for what a package build lacks (see above and pyproject.toml). Each needs root.
ROOT_MARKERS = ("root", "netns", "systemd")


def require(condition: bool, reason: str) -> None:
    """Skip for ``reason`` unless the condition holds; where every test must run (CI, the
    package build), fail instead."""
    if not condition:
        if MUST_RUN:
            pytest.fail(f"{WHERE} must run this test, but: {reason}")
        pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked root, netns or systemd skips (fails where it must run) unless root."""
    for name in ROOT_MARKERS:
        if item.get_closest_marker(name) is not None:
            require(IS_ROOT, f"needs root (marked {name}, see pyproject.toml)")
            return


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Where every test must run, a skip from anywhere (not only require()) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if MUST_RUN and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"{WHERE} must run this test, but it skipped: {reason}"


@functools.cache
def child_path() -> str:
    """Where a fingerd child imports fingerd from: this checkout, or a copy of the package.

    As root, some children run as nobody (``fingerd serve --user nobody``, setpriv), and they
    must be able to import fingerd too. A checkout in a directory others cannot enter (a
    clone in /root, built there with ``dpkg-buildpackage`` as root) is out of their reach:
    then the children get a copy of the package in a public temporary directory, removed at
    exit.
    """
    if not IS_ROOT or subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", "import fingerd.cli"], env={"PYTHONPATH": str(REPO)}, cwd="/",
            capture_output=True, timeout=60, check=False).returncode == 0:
        return str(REPO)
    copy = Path(tempfile.mkdtemp(prefix="fingerd-src-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    shutil.copytree(REPO / "fingerd", copy / "fingerd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return str(copy)


def env(**extra: str) -> dict[str, str]:
    """The environment for a fingerd child: this checkout importable (see child_path), nothing
    from systemd."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("FINGERD_CONFIG", "REMOTE_ADDR", "JOURNAL_STREAM", "CACHE_DIRECTORY",
                         "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET")}
    base["PYTHONPATH"] = child_path()
    base.update(extra)
    return base


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                # systemd-socket-activate answers connect() before the handler runs; a
                # connection we open and close here must not count as a query, and does not
                # (an empty read is a client that left).
                s.close()
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def ask(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 15.0) -> bytes:
    """Send ``data``, half-close, read the whole answer (bounded)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def recv_all(s: socket.socket, limit: int = 1 << 20, timeout: float | None = None) -> bytes:
    """Read to EOF, at most ``limit`` bytes; with ``timeout``, within that many seconds in all
    (else the socket's own timeout applies to each read)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks = []
    size = 0
    while size < limit:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no EOF from fingerd")
            s.settimeout(left)
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A temporary directory that other users can read: `fingerd serve` run as root switches
    to nobody, who cannot enter pytest's private tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="fingerd-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """End a process this test started: SIGTERM, then SIGKILL if it does not go in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def make_config(public_dir: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))

    def make(text: str) -> Path:
        path = public_dir / f"fingerd-{next(counter)}.toml"
        path.write_text(text)
        path.chmod(0o644)
        return path

    return make


STATIC = """
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
"""


class HandlerRun:
    def __init__(self, answer: bytes, returncode: int, stderr: str) -> None:
        self.answer, self.returncode, self.stderr = answer, returncode, stderr


@pytest.fixture
def run_handler() -> Callable[..., HandlerRun]:
    """Run one handler on a socketpair; ``data`` None sends nothing and keeps the socket open."""

    def run(config: Path | None, data: bytes | None, *, close_after_send: bool = True,
            timeout: float = 20.0, extra_env: dict[str, str] | None = None,
            args: list[str] | None = None, prefix: tuple[str, ...] = ()) -> HandlerRun:
        ours, theirs = socket.socketpair()
        argv = [*prefix, *FINGERD, *(args if args is not None else
                                     (["--config", str(config)] if config else []))]
        proc = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
                                env=env(**(extra_env or {})))
        theirs.close()
        try:
            ours.settimeout(timeout)
            if data is not None:
                ours.sendall(data)
                if close_after_send:
                    ours.shutdown(socket.SHUT_WR)
            answer = recv_all(ours)
        finally:
            ours.close()
        _, stderr = proc.communicate(timeout=timeout)
        return HandlerRun(answer, proc.returncode, stderr.decode("utf-8", "replace"))

    return run


@pytest.fixture
def inetd() -> Iterator[Callable[[Path], int]]:
    """Start the handler per connection under systemd-socket-activate, as systemd would."""
    activator = shutil.which("systemd-socket-activate")
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path, host: str = "127.0.0.1") -> int:
        require(activator is not None,
                "systemd-socket-activate not installed (Debian package systemd)")
        assert activator is not None
        port = free_port(host)
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        proc = subprocess.Popen([activator, "--inetd", "-a", "-l", listen, *FINGERD,
                                 "--config", str(config)],
                                env=env(), stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_listening(host, port)
        return port

    yield start
    for proc in procs:
        stop(proc)


class Served:
    """A running ``fingerd serve``: its port, its process, and its log up to "serving on"
    (``head``; the rest is still in ``proc.stderr``)."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], head: bytes = b"") -> None:
        self.port, self.proc, self.head = port, proc, head


def wait_serving(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bytes:
    """Wait for ``fingerd serve``'s "serving on" line on its stderr. Not for a connection to
    succeed: the socket listens before the event loop has its signal handlers, and a SIGHUP or
    SIGTERM sent in between is lost or kills it (seen on a loaded machine). The line comes
    after the handlers. Reads the pipe one byte at a time, so that nothing after the line is
    taken from the test."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while not (b"serving on" in seen and seen.endswith(b"\n")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"fingerd serve did not start: {seen.decode(errors='replace')!r}")
        if select.select([fd], [], [], left)[0]:
            byte = os.read(fd, 1)
            if not byte:
                raise RuntimeError(f"fingerd serve exited: {seen.decode(errors='replace')!r}")
            seen += byte
    return seen


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start ``fingerd serve`` on a free loopback port (as nobody when we are root)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path, *extra: str, host: str = "127.0.0.1",
              prefix: tuple[str, ...] = ()) -> Served:
        port = free_port(host)
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        user = ["--user", "nobody"] if IS_ROOT else []
        proc = subprocess.Popen([*prefix, *FINGERD, "serve", "--config", str(config),
                                 "--listen", listen, *user, *extra],
                                env=env(), stderr=subprocess.PIPE)
        procs.append(proc)
        return Served(port, proc, wait_serving(proc))

    yield start
    for proc in procs:
        stop(proc)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package under test, for the tests that install it (marked systemd): $FINGERD_DEB
    (`make check` builds it first), or built now into a temporary directory."""
    if os.environ.get("FINGERD_DEB"):
        path = Path(os.environ["FINGERD_DEB"]).resolve()
        assert path.is_file(), f"FINGERD_DEB={path} does not exist"
        return path
    out = tmp_path_factory.mktemp("deb")
    # nocheck: the package build would run this very suite's unit tests again.
    build_env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck"}
    try:
        subprocess.run(["make", "-f", "mk/deb.mk", "deb", f"DEBPKG_DIST={out}"], cwd=REPO,
                       check=True, capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL, env=build_env)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"make deb failed:\n{e.stdout[-4000:]}\n{e.stderr[-4000:]}")
    (path,) = out.glob("fingerd_*_all.deb")
    return path
