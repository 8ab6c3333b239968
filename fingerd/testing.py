"""The backend contract as a test suite: every backend, built-in or third-party, passes it.

As keyring does for its backends, the promises of fingerd/backend.py are one pytest class that
a backend's tests subclass, supplying only a ``world`` fixture: the backend's ``[[backend]]``
table, a user it knows and what its answer contains::

    import pytest
    from fingerd.testing import BackendContract, World

    class TestUptimeContract(BackendContract):
        @pytest.fixture
        def world(self):
            return World(table={"type": "uptime"}, known="uptime", expect="up ")

The suite checks ``lookup`` and ``list_users`` directly, from many threads at once and when
interrupted by a timeout; the options (a typo or a bad value is a config error); and, end to
end over real sockets, the per-connection handler and ``fingerd serve`` answering through the
chain. Child processes run ``sys.executable -m fingerd``, so the backend must be importable
(installed, or on ``PYTHONPATH``) by that interpreter. Run as root, ``fingerd serve`` switches to
``nobody``: what the backend reads must then be readable by nobody.

Needs pytest; never imported by fingerd itself.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import fingerd
from fingerd import tomlout
from fingerd.backend import Backend
from fingerd.backends import build_chain, service_from
from fingerd.config import Config, ConfigError
from fingerd.handler import with_alarm
from fingerd.protocol import Query, parse_query
from fingerd.service import ANSWERED, NO_SUCH_USER

# User names a client can send (parse_query accepts them all) that no backend may take for a
# path, a command line, an option or a pattern.
HOSTILE_NAMES = ("..", ".", "../../etc/passwd", "a/b", "a/../b", "-rf", "--help", "$(id)",
                 "`id`", "a;b", "a|b", "%2e%2e", "%2F", "~root", "*", "?", "a\\b", ".plan",
                 "\u210c", "x" * 300)

_TIMEOUT = 30.0


@dataclass
class World:
    """One configured backend and what it knows."""

    table: dict[str, object]  # the [[backend]] table, type included
    known: str  # a user this backend knows
    expect: str  # printable ASCII text its answer for ``known`` contains
    expect_verbose: str = ""  # ... and its answer to ``/W known`` (default: ``expect``)
    unknown: str = "fingerd-nobody-knows-this-one"
    # (key, value) pairs that are each a config error naming the key
    bad_options: list[tuple[str, object]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # for the fingerd processes


def make_backend(table: dict[str, object]) -> Backend:
    """One backend built exactly as the chain builds it (type, options, unknown keys)."""
    [(_name, backend)] = build_chain(Config("test.toml", {"backend": [dict(table)]}))
    return backend


class BackendContract:
    """Subclass as ``TestXxxContract`` and define the ``world`` fixture."""

    @pytest.fixture
    def world(self) -> World:
        raise NotImplementedError("a backend's contract tests define the world fixture")

    @pytest.fixture
    def backend(self, world: World) -> Backend:
        return make_backend(world.table)

    # -- lookup -------------------------------------------------------------------------------

    def test_known_user_is_answered(self, world: World, backend: Backend) -> None:
        """lookup() returns the answer text for a user the backend knows."""
        answer = backend.lookup(Query(world.known))
        assert isinstance(answer, str)
        assert world.expect in answer

    def test_verbose_query_is_answered(self, world: World, backend: Backend) -> None:
        """lookup() answers ``/W user`` (verbose) for a known user too."""
        answer = backend.lookup(Query(world.known, verbose=True))
        assert isinstance(answer, str)
        assert (world.expect_verbose or world.expect) in answer

    def test_unknown_user_is_none(self, world: World, backend: Backend) -> None:
        """lookup() returns None, not an error and not an empty answer, for an unknown user:
        the chain must go on to the next backend."""
        assert backend.lookup(Query(world.unknown)) is None

    @pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n[:20]))
    def test_hostile_names_are_unknown_not_failures(self, backend: Backend, name: str) -> None:
        """A user name that looks like a path, an option or a shell word is just an unknown
        user: None, no exception, and it never reaches anything it could steer."""
        assert parse_query(name.encode() + b"\r\n") == Query(name)  # a name clients can send
        assert backend.lookup(Query(name)) is None
        assert backend.lookup(Query(name, verbose=True)) is None

    def test_answer_is_stable(self, world: World, backend: Backend) -> None:
        """Asking twice gives the same answer (a cache must not change what is said)."""
        first = backend.lookup(Query(world.known))
        assert backend.lookup(Query(world.known)) == first

    def test_concurrent_lookups_agree(self, world: World, backend: Backend) -> None:
        """One backend object answers many threads at once (the long-running front ends'
        worker pool) with the same answers as one thread."""
        expected = backend.lookup(Query(world.known))
        results: list[list[object]] = [[] for _ in range(8)]

        def ask(mine: list[object]) -> None:
            for _ in range(5):
                mine.append(backend.lookup(Query(world.known)))
                mine.append(backend.lookup(Query(world.unknown)))

        threads = [threading.Thread(target=ask, args=(mine,)) for mine in results]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_TIMEOUT)
        assert results == [[expected, None] * 5] * 8

    def test_an_interrupted_lookup_leaves_the_backend_usable(self, world: World,
                                                             backend: Backend) -> None:
        """The per-connection handler interrupts a lookup that takes too long by raising
        inside it (SIGALRM), at any point: no lock may stay held and no cache half-written,
        so that the same object still answers right afterwards. (A file opened just before
        the interruption may be left for the garbage collector to close: between ``open()``
        and ``with`` nothing can prevent that, and the handler's process ends anyway.)"""
        expected = backend.lookup(Query(world.known))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for step in range(1, 40):
                with contextlib.suppress(TimeoutError):
                    with_alarm(step * 0.0002, lambda: backend.lookup(Query(world.known)))
            gc.collect()
        assert backend.lookup(Query(world.known)) == expected
        assert backend.lookup(Query(world.unknown)) is None

    def test_list_users_is_text_or_none(self, backend: Backend) -> None:
        """list_users() (an empty query) answers with text or None, and never raises."""
        for verbose in (False, True):
            answer = backend.list_users(Query("", verbose))
            assert answer is None or isinstance(answer, str)

    def test_declares_whether_it_blocks(self, backend: Backend) -> None:
        """``blocking`` is a bool: the long-running front ends call a backend that declares
        False on their event loop, and every other one on a worker thread."""
        assert isinstance(type(backend).blocking, bool)

    # -- configuration ------------------------------------------------------------------------

    def test_unknown_option_is_a_config_error(self, world: World) -> None:
        """A misspelt option is reported with its name, not silently ignored."""
        with pytest.raises(ConfigError) as caught:
            make_backend({**world.table, "no_such_option": 1})
        assert "backend[1].no_such_option: unknown key" in str(caught.value)

    def test_bad_option_values_are_config_errors(self, world: World) -> None:
        """Each bad value is a ConfigError that names the option, found at load time."""
        for key, value in world.bad_options:
            with pytest.raises(ConfigError) as caught:
                make_backend({**world.table, key: value})
            assert f"backend[1].{key}" in str(caught.value), (key, value)

    # -- through the service, the handler and fingerd serve -----------------------------------

    def test_chain_answers(self, world: World) -> None:
        """Through the chain: a known user is answered by this backend, an unknown one gets
        the "no such user" line."""
        service = service_from(Config("test.toml", {"backend": [dict(world.table)]}))
        reply = service.respond(world.known.encode() + b"\r\n")
        assert (reply.outcome, reply.backend) == (ANSWERED, world.table["type"])
        assert world.expect.encode() in reply.data
        reply = service.respond(world.unknown.encode() + b"\r\n")
        assert reply.outcome == NO_SUCH_USER
        assert reply.data == b"No such user.\r\n"

    def test_handler_answers_on_a_socket(self, world: World) -> None:
        """End to end: the per-connection handler, with the connection as stdin/stdout (a real
        socketpair), answers a known user and refuses an unknown one."""
        with _public_dir() as directory:
            config = _write_config(directory, world.table)
            data, log = _run_handler(config, world.known.encode() + b"\r\n", world.env)
            assert world.expect.encode() in data, log
            assert data.endswith(b"\r\n")
            data, log = _run_handler(config, b"/W " + world.unknown.encode() + b"\r\n",
                                     world.env)
            assert data == b"No such user.\r\n", log

    def test_serve_answers(self, world: World) -> None:
        """End to end: ``fingerd serve`` (as nobody when run as root) answers over TCP."""
        with _public_dir() as directory:
            config = _write_config(directory, world.table)
            with _serve(config, world.env) as (port, log):
                data = _finger(port, world.known.encode() + b"\r\n")
                assert world.expect.encode() in data, log()
                data = _finger(port, b"/W " + world.known.encode() + b"\r\n")
                assert (world.expect_verbose or world.expect).encode() in data, log()
                assert _finger(port, world.unknown.encode() + b"\r\n") == b"No such user.\r\n"


# -- real processes on real sockets -----------------------------------------------------------

def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a fingerd child: this fingerd importable, nothing from systemd."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "FINGERD_CONFIG", "CACHE_DIRECTORY", "LISTEN_FDS",
                        "LISTEN_PID", "NOTIFY_SOCKET", "REMOTE_ADDR")}
    top = str(Path(fingerd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (top, env.get("PYTHONPATH", "")) if p)
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


@contextlib.contextmanager
def _public_dir() -> Iterator[Path]:
    """A temporary directory that ``nobody`` can read (pytest's tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="fingerd-contract-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_config(directory: Path, table: dict[str, object]) -> Path:
    path = directory / "fingerd.toml"
    path.write_text("\n".join(["[[backend]]", *tomlout.table("", table, path="backend")])
                    + "\n")
    path.chmod(0o644)
    return path


def _recv_all(sock: socket.socket, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < 16 * 1024 * 1024:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _run_handler(config: Path, query: bytes, env: dict[str, str]) -> tuple[bytes, str]:
    """``fingerd --config CONFIG`` on one end of a socketpair, as systemd runs it."""
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([sys.executable, "-m", "fingerd", "--config", str(config)],
                                stdin=theirs.fileno(), stdout=theirs.fileno(),
                                stderr=subprocess.PIPE, env=_child_env(env), cwd="/")
        theirs.close()
        try:
            ours.sendall(query)
            data = _recv_all(ours, time.monotonic() + _TIMEOUT)
            _, err = proc.communicate(timeout=_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    return data, err.decode("utf-8", "replace")


def _finger(port: int, query: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT) as sock:
        sock.sendall(query)
        return _recv_all(sock, time.monotonic() + _TIMEOUT)


def _read_lines(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line.decode("utf-8", "replace"))


@contextlib.contextmanager
def _serve(config: Path, env: dict[str, str]) -> Iterator[tuple[int, Callable[[], str]]]:
    """``fingerd serve`` on a free loopback port (as nobody when root); stopped by SIGTERM."""
    user = ["--user", "nobody"] if os.geteuid() == 0 else []
    log: list[str] = []
    for _attempt in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "fingerd", "serve", "--config",
                                 str(config), "--listen", f"127.0.0.1:{port}", *user],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=_child_env(env), cwd="/")
        assert proc.stderr is not None
        log.clear()
        reader = threading.Thread(target=_read_lines, args=(proc.stderr, log), daemon=True)
        reader.start()
        deadline = time.monotonic() + 15
        while not any("serving on" in line for line in log) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        if any("serving on" in line for line in log):
            break
        proc.kill()
        proc.wait()
        reader.join(5)
        if not any("cannot listen" in line for line in log):  # not just a lost race for a port
            raise AssertionError("fingerd serve did not start:\n" + "".join(log))
    else:
        raise AssertionError("no free port for fingerd serve")
    try:
        yield port, lambda: "".join(log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
        proc.stderr.close()
