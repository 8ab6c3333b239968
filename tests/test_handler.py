"""The per-connection handler as a real process on a real socket, fed good and bad clients.

It runs the way fingerd@.service runs it (the connection as fd 0 and fd 1), either on one end of
a socketpair, or per connection under systemd-socket-activate --inetd -a.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import FINGERD, IS_ROOT, STATIC, ask, env, recv_all, require

from fingerd.config import DEFAULT_PATH
from fingerd.protocol import (
    FORWARDING_DENIED,
    INVALID_QUERY,
    LIST_DENIED,
    QUERY_TOO_LONG,
    TIMED_OUT,
    UNAVAILABLE,
)

ESCAPES = STATIC + r'''
evil = "\u001b]0;owned\u0007\u001b[2J\u001b[31mred\u001b[0m\u0000nul\u009b1mC1"
'''


def test_answers_a_static_user_over_inetd_style_socket_activation(make_config, inetd) -> None:
    """`moshez` is answered from the static backend with CRLF, as systemd would run it."""
    port = inetd(make_config(STATIC))
    assert ask(port, b"moshez\r\n") == b"Happy and well\r\n"
    assert ask(port, b"/W moshez\n") == b"Happy and well\r\n"
    assert ask(port, b"nobody-here\r\n") == b"No such user.\r\n"


def test_answers_over_ipv6(make_config, inetd) -> None:
    """The handler does not care about the address family: [::1] works like 127.0.0.1."""
    port = inetd(make_config(STATIC), host="::1")
    assert ask(port, b"moshez\r\n", host="::1") == b"Happy and well\r\n"


def test_refuses_forwarding_and_user_list_by_default(make_config, run_handler) -> None:
    """RFC 1288's own wording refuses {Q2} forwarding and the empty-query user list."""
    config = make_config(STATIC)
    assert run_handler(config, b"moshez@elsewhere.example\r\n").answer == (
        FORWARDING_DENIED.encode() + b"\r\n")
    assert run_handler(config, b"\r\n").answer == LIST_DENIED.encode() + b"\r\n"
    assert run_handler(config, b"/W\r\n").answer == LIST_DENIED.encode() + b"\r\n"


def test_user_list_when_enabled(make_config, run_handler) -> None:
    """list_users = true answers an empty query from the backends that keep a list."""
    config = make_config('[server]\nlist_users = true\n[[backend]]\ntype = "static"\n'
                         'list = "moshez  tty1"\n')
    assert run_handler(config, b"\r\n").answer == b"moshez  tty1\r\n"


def test_oversized_line_gets_a_clear_error_and_is_not_read_forever(make_config, inetd) -> None:
    """A client streaming an endless line is refused after 512 bytes; its answer arrives intact."""
    port = inetd(make_config(STATIC))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"A" * 4096)  # no line end, and more than the cap
        answer = recv_all(s)
    assert answer == QUERY_TOO_LONG.encode() + b"\r\n"


def test_bytes_after_the_query_line_do_not_reset_the_answer(make_config, inetd) -> None:
    """A client that sends more after its query gets its answer and a clean end, not
    ECONNRESET (the handler reads one line; what it leaves unread must not reset the
    connection when it exits)."""
    port = inetd(make_config(STATIC))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"moshez\r\n" + b"more lines\r\n" * 800)
            time.sleep(0.3)  # the handler has answered and exited by now
            assert recv_all(s) == b"Happy and well\r\n"


def test_silent_client_is_cut_off_after_the_read_timeout(make_config, run_handler) -> None:
    """A client that connects and says nothing gets a short line and the process exits 0."""
    config = make_config("[server]\nread_timeout = 1\n" + STATIC)
    started = time.monotonic()
    run = run_handler(config, None)
    elapsed = time.monotonic() - started
    assert run.answer == TIMED_OUT.encode() + b"\r\n"
    assert run.returncode == 0
    assert 0.9 <= elapsed < 8, elapsed
    assert "outcome=timeout" in run.stderr


def test_a_dribbling_client_is_cut_off_at_the_read_timeout(make_config, inetd) -> None:
    """Bytes without a line end do not extend the deadline (no slow-loris hold): a client
    sending one byte every 0.4 s for 4 s is cut off about read_timeout (1 s) after it
    connected, not after its last byte."""
    port = inetd(make_config("[server]\nread_timeout = 1\n" + STATIC))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        connected = time.monotonic()
        cut_off = None
        for _ in range(10):
            time.sleep(0.4)
            try:
                s.sendall(b"x")
            except OSError:  # the handler is gone: it closed on us
                break
            if select.select([s], [], [], 0)[0]:
                cut_off = time.monotonic()
                break
        answer = recv_all(s)
        cut_off = cut_off or time.monotonic()
    assert answer == TIMED_OUT.encode() + b"\r\n"
    assert cut_off - connected < 3, cut_off - connected


def test_binary_junk_gets_a_clear_error_not_a_traceback(make_config, run_handler) -> None:
    """NUL bytes, invalid UTF-8 and escapes in the query get one short line; exit 0."""
    config = make_config(STATIC)
    for junk in (b"\x00\x01\x02\xff\xfe\r\n", b"\xc3\x28\n", b"mos\x1b[2Jhez\r\n",
                 bytes(range(256))[:10] + b"\n"):
        run = run_handler(config, junk)
        assert run.answer == INVALID_QUERY.encode() + b"\r\n", junk
        assert run.returncode == 0
        assert "Traceback" not in run.stderr


def test_telnet_negotiation_is_ignored(make_config, run_handler) -> None:
    """`telnet host 79` may send IAC option bytes first; the query after them is answered."""
    run = run_handler(make_config(STATIC), b"\xff\xfd\x03\xff\xfb\x18moshez\r\n")
    assert run.answer == b"Happy and well\r\n"


def test_client_that_disconnects_early_ends_the_process_quietly(make_config, run_handler) -> None:
    """Closing before the query, or before reading the answer: exit 0, no traceback."""
    config = make_config(STATIC)
    run = run_handler(config, b"")  # connect, close
    assert (run.answer, run.returncode) == (b"", 0)
    assert "Traceback" not in run.stderr
    assert "outcome=disconnected" in run.stderr


def test_client_gone_before_the_answer_is_written_ends_quietly(make_config) -> None:
    """The client sends its query and closes at once: the answer's write fails (EPIPE), the
    handler exits 0 without a traceback, and logs the client as disconnected."""
    import subprocess

    from conftest import FINGERD, env

    ours, theirs = socket.socketpair()  # AF_UNIX: the query stays readable after the close
    proc = subprocess.Popen([*FINGERD, "--config", str(make_config(STATIC))], stdin=theirs,
                            stdout=theirs, stderr=subprocess.PIPE, env=env())
    theirs.close()
    ours.sendall(b"moshez\r\n")
    ours.close()
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b"Traceback" not in stderr
    records = [line for line in stderr.decode().splitlines() if "outcome=" in line]
    assert len(records) == 1
    assert "backend=static outcome=disconnected" in records[0]


def test_client_that_resets_before_the_answer(make_config, inetd) -> None:
    """A client that sends its query and resets at once (ECONNRESET/EPIPE) breaks nothing."""
    port = inetd(make_config(STATIC))
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b"moshez\r\n")
        s.close()  # linger 0: RST
    assert ask(port, b"moshez\r\n") == b"Happy and well\r\n"


def test_escape_sequences_in_a_static_entry_never_reach_the_client(make_config, inetd) -> None:
    """RFC 1288 §3.3 output filter: OSC, CSI, NUL and C1 controls are removed."""
    port = inetd(make_config(ESCAPES))
    assert ask(port, b"evil\r\n") == b"rednulC1\r\n"


def test_answer_size_is_capped(make_config, run_handler) -> None:
    """A huge answer is cut at max_answer_bytes."""
    config = make_config("[server]\nmax_answer_bytes = 1024\n" + STATIC
                         + 'big = """' + "x" * 70 + "\n" * 1 + ("y" * 70 + "\n") * 100 + '"""\n')
    run = run_handler(config, b"big\r\n")
    assert len(run.answer) <= 1024
    assert run.answer.endswith(b"[answer truncated]\r\n")


def test_the_replies_for_unknown_and_silent_users_are_configurable(make_config,
                                                                  run_handler) -> None:
    """no_such_user and no_information replace the built-in lines (and are filtered too)."""
    config = make_config('[server]\nno_such_user = "Nobody by that name\\u001b[2J"\n'
                         'no_information = "Nothing to say"\n' + STATIC + 'quiet = ""\n')
    assert run_handler(config, b"ghost\r\n").answer == b"Nobody by that name\r\n"
    assert run_handler(config, b"quiet\r\n").answer == b"Nothing to say\r\n"


def test_conceal_unknown_makes_unknown_and_silent_users_identical(make_config, run_handler) -> None:
    """Anti-enumeration: with conceal_unknown, a missing user and an empty entry look the same."""
    plain = make_config(STATIC + 'quiet = ""\n')
    assert run_handler(plain, b"ghost\r\n").answer == b"No such user.\r\n"
    assert run_handler(plain, b"quiet\r\n").answer == b"No information.\r\n"
    hidden = make_config("[server]\nconceal_unknown = true\n" + STATIC + 'quiet = ""\n')
    ghost = run_handler(hidden, b"ghost\r\n").answer
    assert ghost == run_handler(hidden, b"quiet\r\n").answer == b"No information.\r\n"


def test_without_a_config_file_nothing_is_revealed(run_handler) -> None:
    """No /etc/fingerd/fingerd.toml: built-in defaults, which answer nobody and refuse lists."""
    prefix: tuple[str, ...] = ()
    if Path(DEFAULT_PATH).exists():  # fingerd is installed here: hide its config from the test
        require(IS_ROOT, f"{DEFAULT_PATH} exists; hiding it needs root (a mount namespace)")
        prefix = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                  f'mount -t tmpfs none "{Path(DEFAULT_PATH).parent}" && exec "$@"', "sh")
    assert run_handler(None, b"root\r\n", prefix=prefix).answer == b"No such user.\r\n"
    assert run_handler(None, b"\r\n", prefix=prefix).answer == LIST_DENIED.encode() + b"\r\n"


def test_a_named_config_that_is_missing_is_an_error(run_handler, tmp_path: Path) -> None:
    """--config naming a file that is not there: "service unavailable", and the reason logged."""
    run = run_handler(tmp_path / "absent.toml", b"root\r\n")
    assert run.answer == UNAVAILABLE.encode() + b"\r\n"
    assert "absent.toml: no such file" in run.stderr
    assert run.returncode == 0


def test_remote_address_is_logged_from_the_socket(make_config) -> None:
    """Without $REMOTE_ADDR (inetd and systemd-socket-activate set none), the record names the
    peer of the TCP connection the handler was given."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.socket() as client:
        client.bind(("127.0.0.7", 0))
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn:
            proc = subprocess.Popen([*FINGERD, "--config", str(make_config(STATIC))],
                                    stdin=conn, stdout=conn, stderr=subprocess.PIPE, env=env())
        client.sendall(b"moshez\r\n")
        client.settimeout(20)
        assert recv_all(client) == b"Happy and well\r\n"
        _, err = proc.communicate(timeout=20)
    assert "remote=127.0.0.7 " in err.decode(), err


def test_remote_address_is_logged_from_the_socket_or_systemd(make_config, run_handler) -> None:
    """One record per query with the remote address: $REMOTE_ADDR (systemd) wins."""
    config = make_config(STATIC)
    run = run_handler(config, b"moshez\r\n", extra_env={"REMOTE_ADDR": "192.0.2.7"})
    line = [x for x in run.stderr.splitlines() if "outcome=" in x]
    assert len(line) == 1
    assert "remote=192.0.2.7" in line[0]
    assert 'query="moshez"' in line[0]
    assert "backend=static outcome=answered" in line[0]
    assert "duration_ms=" in line[0]


def test_the_log_sanitises_what_the_client_sent(make_config, run_handler) -> None:
    """A hostile query cannot forge log lines or put escapes into the journal."""
    run = run_handler(make_config(STATIC), b"x\x1b[2J\"quote\r\n")
    record = next(x for x in run.stderr.splitlines() if "outcome=" in x)
    assert "\x1b" not in record
    assert 'query="x\\x1b[2J\\"quote"' in record
    assert "outcome=invalid" in record


def test_stdout_carries_only_the_answer(make_config, run_handler) -> None:
    """Logging goes to stderr: the socket (stdout) gets the answer and nothing else."""
    run = run_handler(make_config(STATIC), b"moshez\r\n")
    assert run.answer == b"Happy and well\r\n"
    assert "outcome=answered" in run.stderr


def test_handler_works_on_a_pipe(make_config) -> None:
    """The same handler reads a pipe (inetd test harnesses, `fingerd < file`)."""
    import subprocess

    from conftest import FINGERD, env

    proc = subprocess.run([*FINGERD, "--config", str(make_config(STATIC))],
                          input=b"moshez\r\n", capture_output=True, env=env(), timeout=20,
                          check=True)
    assert proc.stdout == b"Happy and well\r\n"


# What a connection imports: every module is paid for by every connection (README.md,
# "Performance"), and `from __future__ import annotations` imports the `__future__` module. A
# new module on this path, or that line in one of these, must be a decision, not an accident.
# (fingerd.cli, which bin/fingerd imports first, is left out: this test calls the handler.)
HANDLER_PATH = ["fingerd", "fingerd.backend", "fingerd.backends", "fingerd.backends.static",
                "fingerd.config", "fingerd.configfiles", "fingerd.handler", "fingerd.log",
                "fingerd.protocol", "fingerd.service", "fingerd.session"]


def test_a_static_answer_imports_only_the_handlers_modules(tmp_path: Path) -> None:
    """The installed handler answering from a static backend, as a connection runs it
    (/usr/bin/python3 -I, the config from its cache): the modules it imports beyond the
    interpreter's start are exactly HANDLER_PATH, built-in ones aside, and not __future__."""
    from backend_fixtures import run_installed

    config = tmp_path / "fingerd.toml"
    config.write_text(STATIC)
    (tmp_path / "cache").mkdir()
    code = ("import os, sys\n"
            "before = set(sys.modules)\n"
            "import _socket\n"  # built in: the connection, without socket.py's imports
            "ours, theirs = _socket.socketpair()\n"
            "theirs.sendall(b'moshez\\r\\n')\n"
            "os.dup2(ours.fileno(), 0); os.dup2(ours.fileno(), 1)\n"
            "from fingerd.handler import main\n"
            "main()\n"
            "sys.stderr.write(' '.join(sorted(set(sys.modules) - before)) + '\\n')\n"
            "theirs.shutdown(1)\n"
            "assert theirs.recv(100) == b'Happy and well\\r\\n'\n")
    for _ in range(2):  # the second run reads the config from the cache, as connections do
        proc = run_installed(code, env={"FINGERD_CONFIG": str(config),
                                        "CACHE_DIRECTORY": str(tmp_path / "cache")})
        assert proc.returncode == 0, proc.stderr
    new = proc.stderr.splitlines()[-1].split()
    assert "__future__" not in new, new
    assert sorted(m for m in new if m.startswith("fingerd")) == HANDLER_PATH, new
    builtin = set(sys.builtin_module_names)  # compiled into the interpreter: no file to load
    assert [m for m in new if not m.startswith("fingerd") and m not in builtin] == [], new
