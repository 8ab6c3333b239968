"""`fingerd serve`: the standalone server answers exactly like the handler, to many at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FINGERD, IS_ROOT, STATIC, ask, env, free_port, recv_all, require

from fingerd.protocol import BUSY, QUERY_TOO_LONG, TIMED_OUT, UNAVAILABLE

QUERIES = [b"moshez\r\n", b"/W moshez\r\n", b"ghost\r\n", b"\r\n", b"x@y.example\r\n",
           b"evil\r\n", b"\xff\xfe\x00\r\n", b"a b c\r\n", b"moshez", b"\xff\xfd\x03moshez\r\n"]
CONFIG = STATIC + r'''evil = "\u001b[31mred\u001b[0m"
'''


def test_serve_answers_the_same_bytes_as_the_handler_for_50_concurrent_clients(
        make_config, run_handler, serve) -> None:
    """For every query form, `fingerd serve` and the handler send identical bytes."""
    config = make_config("[server]\nmax_connections_per_source = 64\n" + CONFIG)
    expected = {q: run_handler(config, q).answer for q in QUERIES}
    assert expected[b"moshez\r\n"] == b"Happy and well\r\n"
    server = serve(config)
    work = [QUERIES[i % len(QUERIES)] for i in range(200)]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda q: (q, ask(server.port, q)), work))
    assert len(answers) == 200
    for query, answer in answers:
        assert answer == expected[query], query


def refusal_bytes(port: int, how: str) -> bytes:
    """What a client gets when it is silent, or sends an over-long line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if how == "too long":
            s.sendall(b"x" * 600 + b"\r\n")
        return recv_all(s)


def test_serve_refuses_with_the_same_bytes_as_the_handler(make_config, inetd, serve) -> None:
    """The refusals come from the one session both front ends drive: a silent client and an
    over-long line get identical bytes from the handler (under systemd-socket-activate) and
    from serve; so does "busy", which only serve says (its caps), as the session renders it."""
    config = make_config("[server]\nread_timeout = 1\nmax_connections_per_source = 1\n"
                         + STATIC)
    handler_port, server = inetd(config), serve(config)
    for how in ("silent", "too long"):
        expected = TIMED_OUT if how == "silent" else QUERY_TOO_LONG
        assert refusal_bytes(handler_port, how) == expected.encode() + b"\r\n", how
        assert refusal_bytes(server.port, how) == expected.encode() + b"\r\n", how
    from fingerd.session import Session

    session = Session(0.0, 1.0)
    session.busy(0.0)
    assert session.reply is not None
    server = serve(make_config("[server]\nmax_connections_per_source = 1\n" + STATIC))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        ask_until(server.port, session.reply.data)
        held.sendall(b"moshez\r\n")
        assert recv_all(held) == b"Happy and well\r\n"


def threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def test_a_static_lookup_in_serve_starts_no_thread(make_config, serve) -> None:
    """The fast path stays fast: a backend that declares blocking = False (static) is answered
    on the event loop itself, so 200 queries leave serve with its one thread. A blocking
    backend behind it (a status file) does get the worker pool, for the users it is asked
    about."""
    status = make_config("alice: from the file\n")  # any readable file in the public dir
    server = serve(make_config(STATIC + f'[[backend]]\ntype = "file"\npath = "{status}"\n'))
    for _ in range(200):
        assert ask(server.port, b"moshez\r\n") == b"Happy and well\r\n"
    assert threads_of(server.proc.pid) == 1
    assert ask(server.port, b"alice\r\n") == b"from the file\r\n"
    assert threads_of(server.proc.pid) > 1


def test_serve_listens_on_ipv6(make_config, serve) -> None:
    """--listen [::1]:PORT works."""
    server = serve(make_config(STATIC), host="::1")
    assert ask(server.port, b"moshez\r\n", host="::1") == b"Happy and well\r\n"


def test_serve_listens_on_every_address_ipv6_and_ipv4(make_config, serve) -> None:
    """--listen :PORT is every address, as fingerd.socket's ListenStream=79: one socket
    answers over IPv4 and IPv6 alike (asked over loopback only)."""
    server = serve(make_config(STATIC), host="")
    assert ask(server.port, b"moshez\r\n", host="127.0.0.1") == b"Happy and well\r\n"
    assert ask(server.port, b"moshez\r\n", host="::1") == b"Happy and well\r\n"


def test_serve_applies_the_handler_limits_per_connection(make_config, serve) -> None:
    """Line cap and read timeout hold in the long-running server too, without stalling others."""
    server = serve(make_config("[server]\nread_timeout = 5\n" + STATIC))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        # While one client is silent, another is answered at once, long before its timeout.
        started = time.monotonic()
        assert ask(server.port, b"moshez\r\n") == b"Happy and well\r\n"
        assert time.monotonic() - started < 2
        assert recv_all(silent) == TIMED_OUT.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"A" * 4096)
        assert recv_all(s) == QUERY_TOO_LONG.encode() + b"\r\n"


def wait_for_log(server, text: str, timeout: float = 10) -> None:
    """Read the server's stderr until ``text`` appears (bounded in time). Reads the pipe's
    descriptor itself: a buffered reader could hold the line while select() sees nothing."""
    import select

    assert server.proc.stderr is not None
    fd = server.proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in the server's log: {seen.decode()!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the server exited before logging {text!r}"
            seen += chunk


def ask_until(port: int, expected: bytes, timeout: float = 10, **kw: str) -> None:
    """Ask until the answer is ``expected``: for state the server reaches asynchronously."""
    deadline = time.monotonic() + timeout
    while (answer := ask(port, b"moshez\r\n", **kw)) != expected:
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)


def connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))  # all of 127.0.0.0/8 is loopback
    s.connect(("127.0.0.1", port))
    return s


def test_serve_caps_connections_per_source(make_config, serve) -> None:
    """One address cannot hold more than max_connections_per_source connections."""
    server = serve(make_config("[server]\nmax_connections_per_source = 2\n" + STATIC))
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
    try:
        ask_until(server.port, BUSY.encode() + b"\r\n")
        # Another address is not affected.
        with connect_from("127.0.0.2", server.port) as other:
            other.sendall(b"moshez\r\n")
            assert recv_all(other) == b"Happy and well\r\n"
    finally:
        for s in held:
            s.close()
    ask_until(server.port, b"Happy and well\r\n")


def test_serve_caps_connections_in_all(make_config, serve) -> None:
    """Beyond max_connections in all, from any address, a client is told the server is busy."""
    server = serve(make_config("[server]\nmax_connections = 2\nmax_connections_per_source = 100\n"
                               + STATIC))
    held = [connect_from(f"127.0.0.{n}", server.port) for n in (2, 3)]
    try:
        deadline = time.monotonic() + 10
        while True:
            with connect_from("127.0.0.4", server.port) as s:
                s.sendall(b"moshez\r\n")
                if recv_all(s) == BUSY.encode() + b"\r\n":
                    break
            assert time.monotonic() < deadline, "never busy"
            time.sleep(0.05)
    finally:
        for s in held:
            s.close()
    ask_until(server.port, b"Happy and well\r\n")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_sigterm_and_sigint(make_config, serve, signum: int) -> None:
    """SIGTERM/SIGINT: exit status 0, no traceback, the port is released."""
    server = serve(make_config(STATIC))
    assert ask(server.port, b"moshez\r\n") == b"Happy and well\r\n"
    server.proc.send_signal(signum)
    assert server.proc.wait(timeout=15) == 0
    assert server.proc.stderr is not None
    stderr = server.proc.stderr.read().decode()
    assert "Traceback" not in stderr
    assert "stopped" in stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_serve_reloads_its_config_on_sighup(make_config, serve) -> None:
    """SIGHUP: the new config applies to the next connection; a broken one is refused."""
    config = make_config(STATIC)
    server = serve(config)
    config.write_text(STATIC.replace("Happy and well", "Reloaded"))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while ask(server.port, b"moshez\r\n") != b"Reloaded\r\n":
        assert time.monotonic() < deadline, "config was not reloaded"
        time.sleep(0.05)
    config.write_text("[server]\nbroken = \n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload failed, keeping the running configuration")
    assert ask(server.port, b"moshez\r\n") == b"Reloaded\r\n"


def test_serve_reload_does_not_drop_connections(make_config, serve) -> None:
    """A connection open across SIGHUP is answered, by the configuration it started with."""
    config = make_config(STATIC)
    server = serve(config)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"mosh")
        config.write_text(STATIC.replace("Happy and well", "Reloaded"))
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "configuration reloaded")
        s.sendall(b"ez\r\n")
        assert recv_all(s) == b"Happy and well\r\n"
    assert ask(server.port, b"moshez\r\n") == b"Reloaded\r\n"


@pytest.mark.root
def test_serve_refuses_root_without_a_user_and_drops_privileges_with_one(make_config) -> None:
    """As root, --user is required; with it, the server runs as that user after binding."""
    config = make_config(STATIC)
    port = free_port()
    proc = subprocess.run([*FINGERD, "serve", "--config", str(config), "--listen",
                           f"127.0.0.1:{port}"], capture_output=True, text=True, env=env(),
                          timeout=20)
    assert proc.returncode == 2
    assert "refusing to serve as root" in proc.stderr
    server = subprocess.Popen([*FINGERD, "serve", "--config", str(config), "--listen",
                               f"127.0.0.1:{port}", "--user", "nobody"], env=env(),
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert ask(port, b"moshez\r\n") == b"Happy and well\r\n"
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        status = Path(f"/proc/{server.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True,
                                    check=True).stdout)
        assert uid_line.split()[1:] == [str(nobody)] * 4
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_serve_takes_sockets_from_systemd(make_config) -> None:
    """LISTEN_FDS/LISTEN_PID (sd_listen_fds(3)): serve answers on the socket it was given."""
    activator = "/usr/bin/systemd-socket-activate"
    require(os.path.exists(activator), "systemd-socket-activate not installed (package systemd)")
    port = free_port()
    user = ["--user", "nobody"] if IS_ROOT else []
    proc = subprocess.Popen([activator, "-l", f"127.0.0.1:{port}", *FINGERD, "serve",
                             "--config", str(make_config(STATIC)), *user], env=env(),
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = ask(port, b"moshez\r\n")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer == b"Happy and well\r\n"
        assert ask(port, b"moshez\r\n") == b"Happy and well\r\n"  # the same process, again
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert f"serving on 127.0.0.1:{port}" in stderr


def test_listen_fds_protocol_without_python_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback reader of sd_listen_fds(3): only for our PID, and it unsets the variables."""
    from fingerd.daemon import _listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "2")
    assert _listen_fds() == []  # meant for another process
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert _listen_fds() == [3, 4]
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ


def test_serve_stops_even_when_a_backend_hangs(make_config, serve) -> None:
    """SIGTERM with a lookup stuck in a worker thread: the client gets "unavailable" within the
    time budget, and the server still exits 0 promptly instead of waiting for the thread."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = silent.getsockname()[1]
        config = make_config("[server]\nbackend_timeout = 0.5\nread_timeout = 2\n"
                             f'[[backend]]\ntype = "http"\nurl = "http://127.0.0.1:{port}/{{user}}"'
                             "\ntimeout = 60\n")
        server = serve(config)
        started = time.monotonic()
        assert ask(server.port, b"moshez\r\n") == UNAVAILABLE.encode() + b"\r\n"
        assert time.monotonic() - started < 5
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        assert server.proc.stderr is not None
        assert "exiting with 1 backend call(s) still running" in server.proc.stderr.read().decode()
    finally:
        silent.close()


def test_serve_names_ipv4_clients_of_a_dual_stack_socket_in_ipv4_form(make_config, serve) -> None:
    """On [::]:PORT an IPv4 client is logged as 127.0.0.1, not ::ffff:127.0.0.1."""
    server = serve(make_config(STATIC), host="::")
    assert ask(server.port, b"moshez\r\n", host="127.0.0.1") == b"Happy and well\r\n"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert server.proc.stderr is not None
    records = [line for line in server.proc.stderr.read().decode().splitlines()
               if 'query="moshez"' in line]
    assert len(records) == 1
    assert "remote=127.0.0.1 " in records[0]


def stop_and_read_log(server) -> str:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert server.proc.stderr is not None
    return server.proc.stderr.read().decode()


def test_serve_times_each_backend_like_the_handler(make_config, run_handler, serve) -> None:
    """backend_timeout bounds each backend in serve too: a hung one fails, the next answers."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = silent.getsockname()[1]
        config = make_config("[server]\nbackend_timeout = 1\n"
                             f'[[backend]]\ntype = "http"\nurl = "http://127.0.0.1:{port}/{{user}}"'
                             "\ntimeout = 8\n" + STATIC)
        started = time.monotonic()
        assert run_handler(config, b"moshez\r\n").answer == b"Happy and well\r\n"
        handler_took = time.monotonic() - started
        server = serve(config)
        started = time.monotonic()
        assert ask(server.port, b"moshez\r\n") == b"Happy and well\r\n"
        assert time.monotonic() - started < 5, "serve waited for the hung backend"
        assert handler_took < 5
        assert "TimeoutError: took longer than 1 s" in stop_and_read_log(server)
    finally:
        silent.close()


def test_serve_does_not_answer_a_partial_query_after_a_reset(make_config, serve) -> None:
    """A client that sends part of a line and resets has left: no lookup (even of "mosh",
    whom a backend knows), "disconnected"."""
    server = serve(make_config(STATIC + 'mosh = "a user, but nobody asked"\n'))
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"mosh")
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    time.sleep(0.3)
    records = [line for line in stop_and_read_log(server).splitlines() if "outcome=" in line]
    assert any('query="mosh" backend=- outcome=disconnected' in r for r in records), records


def test_serve_drains_input_left_after_the_query(make_config, serve) -> None:
    """As the handler: more bytes after the query line do not reset the answer."""
    server = serve(make_config(STATIC))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"moshez\r\n" + b"more lines\r\n" * 800)
            time.sleep(0.3)
            assert recv_all(s) == b"Happy and well\r\n"


def test_serve_out_of_file_descriptors_pauses_instead_of_spinning(make_config, serve) -> None:
    """EMFILE: accept pauses until the next sweep and logs once per pause, not once per
    wake-up; when connections go away, the server answers again."""
    server = serve(make_config("[server]\nmax_connections_per_source = 1000\n"
                               "max_connections = 1000\n" + STATIC),
                   prefix=("prlimit", "--nofile=64:64", "--"))
    held = []
    try:
        for _ in range(120):  # more than the server's 64 descriptors
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(2)
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            if ask(server.port, b"moshez\r\n", timeout=5) == b"Happy and well\r\n":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "serve did not recover"
        time.sleep(0.2)
    pauses = stop_and_read_log(server).count("accept failed: Too many open files")
    assert 1 <= pauses <= 40, pauses  # one per 0.1 s sweep at most, over about 2 s


def test_serve_user_that_does_not_exist_is_a_usage_error(make_config) -> None:
    """--user naming no account: one line and exit 2, not a traceback (also as non-root)."""
    config = make_config(STATIC)
    for demote in ([], ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
                   if IS_ROOT else []):
        proc = subprocess.run([*demote, *FINGERD, "serve", "--config", str(config),
                               "--listen", f"127.0.0.1:{free_port()}",
                               "--user", "no-such-user-here"],
                              capture_output=True, text=True, env=env(), timeout=20)
        assert proc.returncode == 2, proc.stderr
        assert "--user no-such-user-here: no such user" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_per_source_cap_counts_an_ipv6_64_as_one_source() -> None:
    """One host has a whole /64 to choose addresses from; IPv4 addresses count one by one."""
    from fingerd.admission import source_key

    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:2")
    assert source_key("2001:db8::1") != source_key("2001:db8:0:1::1")
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("192.0.2.7") != source_key("192.0.2.8")
