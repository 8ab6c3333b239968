"""Hostile clients, backends and configs (issue 15): each defect found by attacking the landed
daemon, attacked again. Real sockets, a real hostile HTTP server on loopback, real config
files; every test here failed on the code before the fix.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FINGERD, STATIC, ask, env, recv_all

from fingerd.admission import Admission
from fingerd.protocol import BUSY, UNAVAILABLE

# -- a hostile HTTP server: it drips, or answers at once, by user ------------------------------


class Upstream:
    """An HTTP server on loopback: ``/status/slow*`` drips one byte a second forever (bounded
    by the test's lifetime), anything else gets ``text/plain`` at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status/{{user}}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = conn.recv(4096)
                path = request.split(b" ")[1] if b" " in request else b"/"
                if path.startswith(b"/status/slow"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: 100\r\n\r\n")
                    while not self.stopping.wait(1.0):
                        conn.sendall(b"x")
                else:
                    name = path.rsplit(b"/", 1)[-1]
                    body = b"fresh answer for " + name
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(body), body))
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def connect_from(source: str, port: int, timeout: float = 30) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))  # all of 127.0.0.0/8 is loopback
    s.connect(("127.0.0.1", port))
    return s


def query_from(source: str, port: int, line: bytes, timeout: float = 30) -> bytes:
    with connect_from(source, port, timeout) as s:
        s.sendall(line)
        return recv_all(s)


def flood(port: int, sources: list[str], per_source: int, line: bytes,
          stop: threading.Event) -> ThreadPoolExecutor:
    """``per_source`` clients from each source, each asking ``line`` in a loop until ``stop``."""
    def loop(source: str) -> None:
        while not stop.is_set():
            try:
                query_from(source, port, line, timeout=15)
            except OSError:
                time.sleep(0.05)

    pool = ThreadPoolExecutor(len(sources) * per_source)
    for source in sources:
        for _ in range(per_source):
            pool.submit(loop, source)
    return pool


# -- 1. one slow backend must not stall every client of fingerd serve --------------------------


def test_a_slow_upstream_does_not_delay_static_answers(make_config, serve,
                                                        upstream: Upstream) -> None:
    """Defect 1: 16 clients from one address loop on a user whose http lookup drips one byte a
    second. A user the static backend knows, asked from another address, is answered at once:
    it never waits for a worker thread."""
    server = serve(make_config(STATIC + f'[[backend]]\ntype = "http"\nurl = "{upstream.url()}"'
                                        "\ntimeout = 3\n"))
    stop = threading.Event()
    pool = flood(server.port, ["127.0.0.2"], 16, b"slowpoke\r\n", stop)
    try:
        time.sleep(1.0)  # every flooder is waiting on the upstream now
        for _ in range(5):
            started = time.monotonic()
            assert query_from("127.0.0.3", server.port, b"moshez\r\n") == b"Happy and well\r\n"
            assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        pool.shutdown(wait=True)


def test_slow_lookups_of_a_few_sources_leave_workers_for_others(make_config, serve,
                                                                 upstream: Upstream) -> None:
    """Defect 1, the blocking part: 64 clients from 4 addresses loop on dripping lookups; a
    fifth address's http lookup still gets a worker and is answered promptly, because each
    source has a bounded share of the worker pool."""
    server = serve(make_config("[server]\nmax_connections_per_source = 32\n"
                               f'[[backend]]\ntype = "http"\nurl = "{upstream.url()}"'
                               "\ntimeout = 4\n"))
    stop = threading.Event()
    pool = flood(server.port, [f"127.0.0.{n}" for n in (2, 3, 4, 5)], 16, b"slowpoke\r\n", stop)
    try:
        time.sleep(1.5)
        for _ in range(3):
            started = time.monotonic()
            answer = query_from("127.0.0.6", server.port, b"quick\r\n")
            assert answer == b"fresh answer for quick\r\n"
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        pool.shutdown(wait=True)


# -- 2 and 4. configs that crash the TOML parser ------------------------------------------------

CRASHING_CONFIGS = {
    "huge integer": "[server]\nread_timeout = " + "9" * 5000 + "\n",
    "deep nesting": "x = " + "[" * 2000 + "]" * 2000 + "\n",
}


def read_log_until(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 10) -> bytes:
    """Read the process's stderr until ``text`` appears (bounded in time)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in the log: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the process exited before logging {text!r}: {seen!r}"
            seen += chunk
    return seen


@pytest.mark.parametrize("text", CRASHING_CONFIGS.values(), ids=CRASHING_CONFIGS.keys())
def test_a_reload_with_a_config_that_crashes_the_parser_keeps_serving(make_config, serve,
                                                                      text: str) -> None:
    """Defect 2: SIGHUP with a file tomllib raises ValueError or RecursionError on: the
    reload fails, is logged, and the running configuration keeps answering."""
    config = make_config(STATIC)
    server = serve(config)  # and it handles SIGHUP: it said "serving on"
    log = server.head
    config.write_text(text)
    server.proc.send_signal(signal.SIGHUP)
    log += read_log_until(server.proc, b"reload failed")
    assert b"TOML cannot be read" in log
    assert b"Traceback" not in log
    assert ask(server.port, b"moshez\r\n") == b"Happy and well\r\n"


@pytest.mark.parametrize("text", CRASHING_CONFIGS.values(), ids=CRASHING_CONFIGS.keys())
def test_a_config_that_crashes_the_parser_is_a_config_error(make_config, run_handler,
                                                            text: str) -> None:
    """Defect 4: `fingerd check` reports it in one line and exits 1; the handler answers
    "Finger service unavailable" and exits 0, with no traceback anywhere."""
    config = make_config(text)
    check = subprocess.run([*FINGERD, "check", "--config", str(config)], capture_output=True,
                           text=True, env=env(), timeout=30)
    assert check.returncode == 1
    assert f"{config}: TOML cannot be read" in check.stderr
    assert "Traceback" not in check.stderr
    run = run_handler(config, b"moshez\r\n")
    assert run.answer == UNAVAILABLE.encode() + b"\r\n"
    assert run.returncode == 0
    assert "Traceback" not in run.stderr


# -- 3. input after the query must not truncate a large answer ----------------------------------

BIG = "x" * 71 + "\n"


def slow_reader(port: int) -> bytes:
    """Send the query, then another line a moment later, and read the answer slowly through
    a small receive buffer, so the answer is still being written when the extra line comes."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    with s:
        s.connect(("127.0.0.1", port))
        s.sendall(b"big\r\n")
        time.sleep(0.2)
        s.sendall(b"\r\n")
        chunks = []
        while True:
            time.sleep(0.005)
            chunk = s.recv(4096)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class OneShotInetd:
    """Accepts one TCP connection and hands it to a handler process as its stdin and stdout,
    keeping no copy: as systemd's Accept=yes does, the handler alone holds the connection, so
    its exit closes it (systemd-socket-activate keeps a copy, which hides a reset)."""

    def __init__(self, config: Path) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.proc = subprocess.Popen([*FINGERD, "--config", str(self.config)], stdin=conn,
                                         stdout=conn, stderr=subprocess.DEVNULL, env=env())

    def close(self) -> None:
        self.thread.join(30)
        self.listener.close()
        if self.proc is not None:
            self.proc.wait(timeout=30)


@pytest.mark.parametrize("mode", ["handler", "serve"])
def test_input_after_the_query_does_not_truncate_a_large_answer(make_config, serve,
                                                                mode: str) -> None:
    """Defect 3: a second line sent while a 58400-byte answer is on its way is read and
    discarded; the client gets the whole answer, in both modes."""
    config = make_config('[[backend]]\ntype = "static"\n[backend.users]\nbig = """\n'
                         + BIG * 800 + '"""\n')
    if mode == "handler":
        inetd = OneShotInetd(config)
        try:
            answer = slow_reader(inetd.port)
        finally:
            inetd.close()
    else:
        answer = slow_reader(serve(config).port)
    assert len(answer) == 58400
    assert answer == (BIG * 800).replace("\n", "\r\n").encode()


# -- 6. a status file that repeats one name -----------------------------------------------------


def test_a_status_file_repeating_one_name_is_read_in_linear_time() -> None:
    """Defect 6: 4 MiB of `a:` lines (each appending to the same user) is parsed in seconds
    at most, not in minutes (it was quadratic: 4 s per connection for 1 MiB, 64 s for 4)."""
    from fingerd.backends.file import parse_status

    text = "a: x\n" * (4 * 1024 * 1024 // 5)
    started = time.monotonic()
    users = parse_status(text)
    assert time.monotonic() - started < 10  # a hang guard, not a benchmark
    assert users["a"].count("\n") == len(text) // 5 - 1


# -- 7. unsent answers are bounded in memory ----------------------------------------------------


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_clients_that_never_read_cannot_take_the_servers_memory(make_config, serve) -> None:
    """Defect 7: clients that ask for a large answer and never read it leave in the server
    what the kernel's socket buffers do not take. That is bounded in all by max_unsent_bytes
    (8 MiB here): past it, a client is told the server is busy, and the server keeps
    answering others promptly."""
    # 4 MiB: the kernel takes less than 3 MiB of it into a socket's buffers
    status = make_config("big: " + "y" * (4 * 1024 * 1024) + "\n")
    old = time.time() - 60  # parsed once and kept: the file is not "racily" new
    os.utime(status, (old, old))
    # glibc keeps freed large blocks for reuse unless they were mmap()ed: with a fixed mmap
    # threshold, the server's RSS is what it holds, not what it once held.
    # (Rendering 48 answers of 4 MiB takes the loop a while: lookups get time to finish.)
    server = serve(make_config(
        "[server]\nbackend_timeout = 60\nread_timeout = 60\n"
        "max_answer_bytes = 8388608\nmax_unsent_bytes = 8388608\n"
        "max_connections_per_source = 256\n"
        + STATIC + f'[[backend]]\ntype = "file"\npath = "{status}"\nmax_bytes = 8388608\n'),
        prefix=("env", "MALLOC_MMAP_THRESHOLD_=131072"))
    before = vm(server.proc.pid, "VmRSS")
    stalled = []
    try:
        for _ in range(48):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"big\r\n")
            stalled.append(s)
        firsts = []
        for s in stalled:  # each has its answer, or "busy", on its way
            s.settimeout(60)
            firsts.append(s.recv(64, socket.MSG_PEEK))
        started = time.monotonic()
        assert query_from("127.0.0.2", server.port, b"moshez\r\n") == b"Happy and well\r\n"
        assert time.monotonic() - started < 2
        held = vm(server.proc.pid, "VmRSS") - before
        assert held < 48 * 1024, f"the server holds {held} KiB more than when it started"
        answered = sum(first.startswith(b"yyyy") for first in firsts)
        assert firsts.count(BUSY.encode() + b"\r\n") + answered == 48, set(firsts)
        assert 1 <= answered < 48, firsts
    finally:
        for s in stalled:
            s.close()


# -- 8. a few addresses cannot hold the whole connection table ----------------------------------


def test_idle_connections_from_a_few_addresses_do_not_lock_out_a_new_one(make_config,
                                                                         serve) -> None:
    """Defect 8: 300 idle connections from 20 addresses fill the table (256); a client from an
    address not among them is answered, not told "busy": it displaces the oldest idle
    connection of the address that holds the most."""
    server = serve(make_config("[server]\nread_timeout = 30\n" + STATIC))
    held = []
    try:
        for n in range(300):
            try:
                held.append(connect_from(f"127.0.1.{n % 20 + 1}", server.port, timeout=10))
            except OSError:
                break
        time.sleep(0.5)
        for _ in range(3):
            assert query_from("127.0.0.1", server.port, b"moshez\r\n") == b"Happy and well\r\n"
    finally:
        for s in held:
            s.close()


def test_lookups_queued_behind_a_slow_upstream_do_not_lock_out_a_new_address(
        make_config, serve, upstream: Upstream) -> None:
    """Defect 8, with busy connections instead of idle ones (found by bench/hostile.py, 2d):
    clients from two addresses loop on a user whose http lookup drips, and fill the table (32
    here) with connections whose lookups wait for a worker thread behind their address's
    share. A client from a third address displaces one of those queued lookups (that client
    is told "busy") and is answered at once."""
    server = serve(make_config("[server]\nmax_connections = 32\n"
                               "max_connections_per_source = 16\n" + STATIC
                               + f'[[backend]]\ntype = "http"\nurl = "{upstream.url()}"'
                               "\ntimeout = 4\n"))
    stop = threading.Event()
    pool = flood(server.port, ["127.0.0.2", "127.0.0.3"], 16, b"slowpoke\r\n", stop)
    try:
        time.sleep(1.5)  # 32 connections: 4 lookups of each address on threads, 24 queued
        for _ in range(5):
            started = time.monotonic()
            assert query_from("127.0.0.4", server.port, b"moshez\r\n") == b"Happy and well\r\n"
            assert time.monotonic() - started < 1.0
            time.sleep(0.2)
    finally:
        stop.set()
        pool.shutdown(wait=True)
    # The displaced lookups' clients were told so (a refusal at the door logs no query).
    read_log_until(server.proc, b'query="slowpoke" backend=- outcome=busy')


def test_serve_displaces_a_silent_connection_before_a_queued_lookup(
        make_config, serve, upstream: Upstream) -> None:
    """The full table of fingerd serve gives up, of the address holding the most, the
    connection that has asked nothing yet (told busy at once), not one whose lookup waits for
    a thread, even an earlier one: 5 lookups of 127.0.0.2 on a dripping upstream (4 on
    threads, 1 queued), then a silent connection of 127.0.0.2; 127.0.0.3 comes."""
    server = serve(make_config("[server]\nmax_connections = 6\n" + STATIC
                               + f'[[backend]]\ntype = "http"\nurl = "{upstream.url()}"'
                               "\ntimeout = 4\n"))
    askers = [connect_from("127.0.0.2", server.port) for _ in range(5)]
    try:
        for asker in askers:
            asker.sendall(b"slowpoke\r\n")
        time.sleep(0.5)  # the lookups are on their threads, or queued
        with connect_from("127.0.0.2", server.port, timeout=3) as silent:
            time.sleep(0.3)
            assert query_from("127.0.0.3", server.port, b"moshez\r\n") == b"Happy and well\r\n"
            assert recv_all(silent) == BUSY.encode() + b"\r\n"
    finally:
        for asker in askers:
            asker.close()
    log = read_log_until(server.proc, b'query="" backend=- outcome=busy')
    assert b'query="slowpoke" backend=- outcome=busy' not in log


def test_a_session_told_busy_after_its_query_lingers_only_for_what_it_sent() -> None:
    """Told busy before its query came, a client is about to send it: the server lingers so
    that the query cannot reset the answer. Told busy after (displaced while its lookup
    waited, or an answer over the unsent budget), it has nothing more to send."""
    from fingerd.session import Session

    waiting = Session(0.0, 10.0)
    waiting.busy(0.0)
    assert waiting.linger
    asked = Session(0.0, 10.0)
    assert asked.receive(b"alice\r\n")
    asked.busy(0.0)
    assert asked.reply is not None and asked.reply.data == BUSY.encode() + b"\r\n"
    assert not asked.linger
    eager = Session(0.0, 10.0)
    assert eager.receive(b"alice\r\nmore")  # sent more after its line: that still lingers
    eager.busy(0.0)
    assert eager.linger


def test_a_newcomer_displaces_a_silent_connection_before_a_queued_question() -> None:
    """Whom the full table gives up for a newcomer: of the source holding the most, its
    oldest connection still waiting for its query (it asked nothing), else its newest queued
    lookup (the oldest is next to get a thread); never a lookup already running."""
    limits = SimpleNamespace(max_connections=4, max_connections_per_source=4,
                             max_unsent_bytes=1 << 20, max_answer_bytes=65536)
    rank = {"running": 0, "queued": 1, "silent": 2}
    admission = Admission(limits, lambda holder: rank[holder.kind])  # type: ignore[arg-type]

    def holder(source: str, kind: str) -> SimpleNamespace:
        return SimpleNamespace(source=source, kind=kind)

    flooder = [holder("10.0.0.1", kind) for kind in ("queued", "silent", "queued", "silent")]
    for h in flooder:
        assert admission.admit(h) == (True, None)
    assert admission.admit(holder("10.0.0.2", "silent")) == (True, flooder[1])
    assert admission.admit(holder("10.0.0.3", "silent")) == (True, flooder[3])
    assert admission.admit(holder("10.0.0.4", "silent")) == (True, flooder[2])
    # 10.0.0.1 holds one connection now, as much as anyone: nobody is displaced.
    assert admission.admit(holder("10.0.0.5", "silent")) == (False, None)

    running = Admission(limits, lambda holder: rank[holder.kind])  # type: ignore[arg-type]
    for kind in ("running", "running", "running", "running"):
        running.admit(holder("10.0.0.1", kind))
    assert running.admit(holder("10.0.0.2", "silent")) == (False, None)


# -- 9. a backend's own timeout is logged as its own --------------------------------------------


def test_serve_logs_a_backends_own_timeout_with_its_reason(make_config, serve) -> None:
    """Defect 9: an http backend whose own timeout (0.5 s) passes is logged with its URL and
    reason, as the handler logs it, not as serve's 5 s backend_timeout."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = silent.getsockname()[1]
        server = serve(make_config(f'[[backend]]\ntype = "http"\nurl = '
                                   f'"http://127.0.0.1:{port}/finger/{{user}}"\ntimeout = 0.5\n'))
        assert ask(server.port, b"moshez\r\n") == UNAVAILABLE.encode() + b"\r\n"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert server.proc.stderr is not None
        log = server.proc.stderr.read().decode()
        assert f"http://127.0.0.1:{port}/finger/moshez: no answer within 0.5 s" in log, log
        assert "took longer than 5 s" not in log
    finally:
        silent.close()


# -- 10. what `fingerd check` prints is escaped -------------------------------------------------


def test_check_escapes_a_backend_name_with_control_characters(make_config) -> None:
    """Defect 10: a backend `name` holding ESC and a newline is printed escaped, never raw to
    the admin's terminal."""
    config = make_config('[[backend]]\ntype = "static"\nname = "evil\\u001b]0;owned\\u0007\\nx"\n')
    check = subprocess.run([*FINGERD, "check", "--config", str(config)], capture_output=True,
                           text=True, env=env(), timeout=30)
    assert check.returncode == 0, check.stderr
    assert "\x1b" not in check.stdout and "\x07" not in check.stdout
    assert "evil\\x1b]0;owned\\x07\\x0ax" in check.stdout


# -- 12. escapes in the log are unambiguous -----------------------------------------------------


def test_log_escapes_are_unambiguous() -> None:
    """Defect 12: U+202E is logged as \\u202e (not \\x202e, which reads as \\x20 and "2e"); a
    character above the BMP as \\U........; C0 controls as \\x.."""
    from fingerd.log import printable

    assert printable("a\u202eb") == "a\\u202eb"
    assert printable("\U000e0001") == "\\U000e0001"
    assert printable("\x1b[31m") == "\\x1b[31m"
