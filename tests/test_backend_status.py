"""The ``status`` backend against a real status service (``fingerd status-server`` on a UNIX
socket, run as nobody when the tests run as root): the shared backend contract, the same bytes
from the per-connection handler and ``fingerd serve``, the output filter, the chain going on,
a service that is down, silent or speaks garbage, and what the handler imports."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixtures import fingerd_serve, make_backend, public_dir, run_handler, write_config
from conftest import REPO
from status_fixtures import my_name, run_cli, status_server

from fingerd.backends.status import StatusServiceError
from fingerd.protocol import Query
from fingerd.testing import BackendContract, World

ME = my_name()


class TestStatusContract(BackendContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        with status_server() as server:
            assert run_cli(server, "set", "Happy and well").returncode == 0
            yield World(table={"type": "status", "socket": server.socket}, known=ME,
                        expect="Happy and well", expect_verbose="(Status set ",
                        bad_options=[("socket", 42), ("socket", "relative.sock"),
                                     ("timeout", 0), ("timeout", "3")])


@pytest.fixture
def server() -> Iterator[object]:
    with status_server() as s:
        yield s


def chain(socket_path: str, *more: dict[str, object]) -> list[dict[str, object]]:
    return [{"type": "status", "socket": socket_path}, *more]


def test_handler_and_serve_answer_the_same_bytes(server) -> None:  # type: ignore[no-untyped-def]
    """The per-connection handler and `fingerd serve` send the same bytes for a user with a
    status, its long form (with the time it was set) and a user without one."""
    assert run_cli(server, "set", "--for", "2h", "Out to lunch\nback at 2").returncode == 0
    with public_dir() as directory:
        config = write_config(Path(directory) / "fingerd.toml", chain(server.socket))
        queries = [ME.encode() + b"\r\n", b"/W " + ME.encode() + b"\r\n", b"nobody-here\r\n"]
        by_handler = [run_handler(config, q).data for q in queries]
        with fingerd_serve(config) as served:
            by_serve = [served.query(q) for q in queries]
    assert by_handler == by_serve
    assert by_handler[0] == b"Out to lunch\r\nback at 2\r\n"
    assert re.fullmatch(rb"Out to lunch\r\nback at 2\r\n\r\n\(Status set \w{3} \w{3} [ \d]\d "
                        rb"\d\d:\d\d \d{4} \(\w+\), expires \w{3} \w{3} [ \d]\d \d\d:\d\d \d{4} "
                        rb"\(\w+\)\.\)\r\n", by_handler[1]), by_handler[1]
    assert by_handler[2] == b"No such user.\r\n"


def test_escapes_in_a_status_reach_no_client(server) -> None:  # type: ignore[no-untyped-def]
    """A status full of terminal escapes and control characters is answered with them
    removed, by the handler and by `fingerd serve` alike."""
    hostile = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m text\x00\x9b1m\x08 end"
    assert run_cli(server, "set", "-", stdin=hostile.encode()).returncode == 0
    with public_dir() as directory:
        config = write_config(Path(directory) / "fingerd.toml", chain(server.socket))
        answers = [run_handler(config, ME.encode() + b"\r\n").data]
        with fingerd_serve(config) as served:
            answers.append(served.query(ME.encode() + b"\r\n"))
    for data in answers:
        assert data == b"red text end\r\n", data


def test_utf8_status_is_stored_as_utf8_and_filtered_by_charset(server) -> None:  # type: ignore[no-untyped-def]
    """A UTF-8 status goes out as UTF-8 with output_charset = "utf-8", as "?" with the
    default ASCII."""
    assert run_cli(server, "set", "Caf\u00e9 \u2615").returncode == 0
    with public_dir() as directory:
        ascii_config = write_config(Path(directory) / "a.toml", chain(server.socket))
        utf8_config = write_config(Path(directory) / "u.toml", chain(server.socket),
                                   {"output_charset": "utf-8"})
        assert run_handler(ascii_config, ME.encode() + b"\r\n").data == b"Caf? ?\r\n"
        assert run_handler(utf8_config, ME.encode() + b"\r\n").data == \
            "Caf\u00e9 \u2615\r\n".encode()


def test_no_status_lets_the_chain_go_on(server) -> None:  # type: ignore[no-untyped-def]
    """Without a status the next backend answers (as `local` would from ~/.plan); with one,
    the status answers first; after `clear`, the next backend again."""
    static = {"type": "static", "users": {ME: "From the next backend"}}
    with public_dir() as directory:
        config = write_config(Path(directory) / "fingerd.toml", chain(server.socket, static))
        query = ME.encode() + b"\r\n"
        assert run_handler(config, query).data == b"From the next backend\r\n"
        assert run_cli(server, "set", "From my status").returncode == 0
        assert run_handler(config, query).data == b"From my status\r\n"
        assert run_cli(server, "clear").returncode == 0
        assert run_handler(config, query).data == b"From the next backend\r\n"


def test_expired_status_is_not_answered(server) -> None:  # type: ignore[no-untyped-def]
    """A status past its expiry is None for the backend."""
    backend = make_backend({"type": "status", "socket": server.socket})
    assert run_cli(server, "set", "--for", "3s", "Briefly").returncode == 0
    assert backend.lookup(Query(ME)) == "Briefly"
    deadline = time.monotonic() + 15
    while backend.lookup(Query(ME)) is not None:
        assert time.monotonic() < deadline, "still answered after 15 s"
        time.sleep(0.2)


def test_service_not_running_fails_the_lookup_and_the_chain_goes_on() -> None:
    """No service on the socket (not enabled): the lookup fails, the journal line says why,
    and the next backend answers."""
    static = {"type": "static", "users": {ME: "From the next backend"}}
    with public_dir() as directory:
        missing = f"{directory}/no-such.sock"
        config = write_config(Path(directory) / "fingerd.toml", chain(missing, static))
        reply = run_handler(config, ME.encode() + b"\r\n")
        assert reply.data == b"From the next backend\r\n"
        assert f"status service at {missing}: No such file or directory" in reply.log


class FakeService:
    """A UNIX socket server in a thread that reads a request and answers it with ``reply``
    after ``delay`` seconds (or never, for None)."""

    def __init__(self, reply: bytes | None, delay: float = 0.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="fingerd-fake-status-")
        self.path = f"{self.dir}/s.sock"
        self.reply, self.delay = reply, delay
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        held = []
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.settimeout(2)
            # The request first, as the real service does (else the client's send may fail).
            with contextlib.suppress(OSError):
                conn.recv(4096)
            if self.reply is not None and not self.stopping.wait(self.delay):
                conn.sendall(self.reply)
                conn.close()
        for conn in held:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("reply, reason", [
    (b"GARBAGE\n", "malformed reply"),
    (b"STATUS 1 0 100\nshort", "malformed reply"),
    (b"", "truncated reply"),
    (b"X" * 100_000, "truncated reply"),
    (b"ERR busy status service busy, try again later\n", "refused: busy"),
])
def test_a_service_that_speaks_garbage_fails_the_lookup(reply: bytes, reason: str) -> None:
    """Garbage, a cut-off or endless reply, or a refusal: the lookup fails with the reason
    (the chain logs it and goes on), never a half status."""
    fake = FakeService(reply)
    try:
        backend = make_backend({"type": "status", "socket": fake.path})
        with pytest.raises(StatusServiceError, match=re.escape(reason)):
            backend.lookup(Query("alice"))
    finally:
        fake.close()


def test_a_silent_service_fails_the_lookup_in_time() -> None:
    """A service that accepts and never answers fails the lookup after `timeout`."""
    fake = FakeService(None)
    try:
        backend = make_backend({"type": "status", "socket": fake.path, "timeout": 0.5})
        started = time.monotonic()
        with pytest.raises(StatusServiceError, match=r"no answer within 0\.5 s"):
            backend.lookup(Query("alice"))
        assert time.monotonic() - started < 3
    finally:
        fake.close()


def test_handler_with_the_status_backend_imports_nothing_heavy(server) -> None:  # type: ignore[no-untyped-def]
    """Debian's interpreter, isolated as /usr/bin/fingerd runs it: a handler answering from the
    status backend imports neither json, re, socket, enum nor asyncio (only the built-in
    _socket and the protocol module)."""
    assert run_cli(server, "set", "Lean").returncode == 0
    with public_dir() as directory:
        config = write_config(Path(directory) / "fingerd.toml", chain(server.socket))
        cache = Path(directory) / "cache"
        cache.mkdir()
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                f"sys.argv = ['fingerd', '--config', {str(config)!r}]; "
                "from fingerd.cli import run; run()")
        modules: set[str] = set()
        for _ in range(2):  # the second run reads the config cache, as every connection does
            ours, theirs = socket.socketpair()
            with ours, theirs:
                proc = subprocess.Popen(["/usr/bin/python3", "-I", "-X", "importtime", "-c",
                                         code], stdin=theirs, stdout=theirs,
                                        stderr=subprocess.PIPE,
                                        env={"CACHE_DIRECTORY": str(cache), "PATH": "/usr/bin"})
                ours.sendall(ME.encode() + b"\r\n")
                ours.settimeout(20)
                answer = ours.recv(4096)
                _, err = proc.communicate(timeout=30)
            modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$",
                                     err.decode(), re.MULTILINE))
        assert answer == b"Lean\r\n"
    assert {"fingerd.backends.status", "fingerd.status_protocol", "_socket"} <= modules
    assert not {"json", "re", "socket", "enum", "asyncio", "fingerd.status_server",
                "fingerd.status_store"} & modules, sorted(modules)
