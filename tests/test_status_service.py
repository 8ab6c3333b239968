"""`fingerd status` against a real status service (``fingerd status-server``) on a UNIX socket
in a temporary directory, with the kernel's SO_PEERCRED deciding who is asking: the test's own
user, and nobody (through ``setpriv``) when the tests run as root. The booted-systemd version
with real accounts is tests/test_e2e_status.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from status_fixtures import (
    IS_ROOT,
    NOBODY,
    StatusServer,
    my_name,
    read_to_eof,
    request_as_nobody,
    run_cli,
    status_server,
)

from fingerd.status_protocol import MAX_TEXT_BYTES, format_get, format_set

ENABLE = "systemctl enable --now fingerd-status.socket"


def stored(server: StatusServer, user: str) -> bytes:
    """What the service answers to GET user."""
    return server.request(format_get(user))


def test_set_show_and_clear_your_own_status() -> None:
    """The user's cycle: no status, set one (it is stored whole, with no expiry), show it,
    clear it, clear again (nothing to clear): each with exit status 0 and a clear message."""
    me = my_name()
    with status_server() as server:
        r = run_cli(server)
        assert (r.returncode, r.stdout) == (0, f"No status set for {me}.\n"), r.stderr
        r = run_cli(server, "set", "Out", "to", "lunch,", "back", "at", "2")
        assert (r.returncode, r.stdout) == (0, f"Status of {me} set (no expiry).\n"), r.stderr
        assert stored(server, me).startswith(b"STATUS ")
        assert stored(server, me).endswith(b" 0 23\nOut to lunch, back at 2")
        r = run_cli(server)
        assert r.returncode == 0
        lines = r.stdout.splitlines()
        assert lines[0] == "Status:  Out to lunch, back at 2"
        assert re.fullmatch(r"Set:     \w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[1])
        assert lines[2] == "Expires: never"
        r = run_cli(server, "clear")
        assert (r.returncode, r.stdout) == (0, f"Status of {me} cleared.\n")
        assert stored(server, me) == b"NONE\n"
        r = run_cli(server, "clear")
        assert (r.returncode, r.stdout) == (0, f"{me} had no status to clear.\n")


def test_status_from_stdin_and_times_in_local_time() -> None:
    """`set -` reads the status from standard input (several lines, as typed); `--for`
    sets the expiry; times are shown in the caller's time zone (TZ)."""
    with status_server() as server:
        r = run_cli(server, "set", "--for", "1h30m", "-", stdin=b"In the lab\nRoom 101\n")
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"Status of \S+ set \(until .* UTC\)\.\n", r.stdout), r.stdout
        r = run_cli(server, env={"TZ": "XYZ-9"})
        assert r.stdout.startswith("Status:  In the lab\n         Room 101\nSet:  ")
        assert r.stdout.count(" XYZ") == 2, r.stdout
        assert re.search(r"^Expires: .* XYZ \(in 1h(29|30)m\)$", r.stdout, re.MULTILINE), \
            r.stdout


def test_escapes_are_shown_escaped_by_the_cli() -> None:
    """A status with terminal escapes is stored as given (finger's output filter removes
    them, see test_backend_status.py), and `fingerd status` prints them as \\x1b, never raw."""
    with status_server() as server:
        assert run_cli(server, "set", "\x1b]0;owned\x07\x1b[31mred").returncode == 0
        r = run_cli(server)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout
        assert "Status:  \\x1b]0;owned\\x07\\x1b[31mred\n" in r.stdout


def test_limits_are_refused_with_the_limit_and_the_status_kept() -> None:
    """Too long (bytes or lines), empty, or an unreadable --for: exit 1, a message naming
    the limit or the fix, and the stored status untouched."""
    me = my_name()
    with status_server() as server:
        assert run_cli(server, "set", "Kept").returncode == 0
        before = stored(server, me)
        for args, stdin, expect in [
            (["set", "x" * (MAX_TEXT_BYTES + 1)], None, "the limit is 1024 bytes"),
            (["set", "-"], b"1\n2\n3\n4\n5\n", "4 lines"),
            (["set", "-"], b"y" * 100_000, "the limit is 1024 bytes"),
            (["set", ""], None, "empty status (to remove it: fingerd status clear)"),
            (["set", "   "], None, "empty status"),
            (["set", "-"], b"\xff\xfe", "not UTF-8"),
            (["set", "--for", "2x", "hi"], None, "e.g. 90s, 30m, 2h, 1d or 1h30m"),
            (["set", "--for", "400d", "hi"], None, "at most 365d"),
        ]:
            r = run_cli(server, *args, stdin=stdin)
            assert r.returncode == 1, (args, r.stdout)
            assert expect in r.stderr, (args, r.stderr)
            assert r.stderr.startswith("fingerd status: ")
            assert r.stderr.count("\n") == 1, r.stderr  # one line, no traceback
        assert stored(server, me) == before


def test_server_refuses_over_limit_requests_itself() -> None:
    """A client that skips the CLI's checks gets the same refusals from the service, and the
    stored status is untouched."""
    me = my_name()
    with status_server() as server:
        server.request(format_set(me, "Kept"))
        before = stored(server, me)
        text = b"x" * (MAX_TEXT_BYTES + 1)
        assert server.request(b"SET %s 0 %d\n" % (me.encode(), len(text)) + text) \
            .startswith(b"ERR too-long status too long: 1025 bytes; the limit is 1024 bytes")
        assert server.request(b"SET %s 0 9\n1\n2\n3\n4\n5" % me.encode()) \
            .startswith(b"ERR too-long ")
        assert server.request(b"SET %s 0 3\n   " % me.encode()).startswith(b"ERR empty ")
        assert stored(server, me) == before


def test_service_not_running_says_what_to_enable() -> None:
    """No service on the socket: exit 1 and the command an admin runs to turn it on."""
    with status_server() as server:
        path = server.socket
    for args in ([], ["set", "hi"], ["clear"]):
        r = run_cli(path, *args)
        assert r.returncode == 1
        assert "the status service is not running" in r.stderr
        assert ENABLE in r.stderr


@pytest.mark.root
def test_another_user_cannot_change_your_status_by_any_option() -> None:
    """Root's status, attacked by nobody: `set --user`, `clear --user`, the options before
    or after the action, and raw requests that name root (the request says nothing the
    kernel does not confirm) are all refused as "not permitted"; root's status is unchanged
    and nobody may still read it (finger is public)."""
    with status_server() as server:
        assert run_cli(server, "set", "Mine").returncode == 0
        before = stored(server, "root")
        for args in (["set", "--user", "root", "Hacked"], ["--user", "root", "set", "Hacked"],
                     ["clear", "--user", "root"], ["--user", "root", "clear"]):
            r = run_cli(server, *args, as_nobody=True)
            assert r.returncode == 1, args
            assert r.stderr == ("fingerd status: not permitted: nobody may change only their "
                                "own status, not root's (root may change anyone's)\n"), args
        for raw in (format_set("root", "Hacked"), b"CLEAR root\n"):
            assert request_as_nobody(server, raw).startswith(b"ERR not-permitted ")
        assert stored(server, "root") == before
        r = run_cli(server, "--user", "root", as_nobody=True)
        assert r.returncode == 0 and r.stdout.startswith("Status:  Mine\n")
        assert server.wait_for_log("nobody (uid 65534) may not set the status of root")


@pytest.mark.root
def test_root_acts_for_others() -> None:
    """Root sets and clears another account's status with --user; that user sees it as
    their own. A name without an account is refused."""
    with status_server() as server:
        assert run_cli(server, "set", "--user", "nobody", "Set by root").returncode == 0
        r = run_cli(server, as_nobody=True)
        assert r.stdout.startswith("Status:  Set by root\n"), r
        assert run_cli(server, "clear", "--user", "nobody").stdout == \
            "Status of nobody cleared.\n"
        assert stored(server, "nobody") == b"NONE\n"
        r = run_cli(server, "set", "--user", "no-such-account-here", "x")
        assert (r.returncode, r.stderr) == (
            1, "fingerd status: no such account: no-such-account-here\n")
        assert server.wait_for_log("status of nobody set by root (uid 0)")


def test_each_change_is_logged_with_uid_and_user_never_the_text() -> None:
    """One log line per set and clear names the user and the caller's UID; the text is
    never logged."""
    me = my_name()
    with status_server() as server:
        run_cli(server, "set", "--for", "2h", "Secret plans")
        run_cli(server, "clear")
        assert server.wait_for_log(f"status of {me} cleared by")
        log = server.log
        assert f"status of {me} set by {me} (uid {os.getuid()}), expires in 7200 s" in log
        assert f"status of {me} cleared by {me} (uid {os.getuid()})" in log
        assert "Secret" not in log


def test_a_flood_of_sets_is_refused_and_the_status_stays_whole() -> None:
    """A user (not root) who sets again and again gets 5 through, then "too many changes"
    with when to try again (exit 1); the stored status is the last accepted one, whole; the
    log has one refusal line, not one per refused request."""
    user = "nobody" if IS_ROOT else my_name()
    with status_server() as server:
        results = [run_cli(server, "set", f"flood {i} " + "z" * 900, as_nobody=IS_ROOT)
                   for i in range(8)]
        assert [r.returncode for r in results] == [0] * 5 + [1] * 3
        for r in results[5:]:
            assert re.fullmatch(r"fingerd status: too many changes: try again in \d+ s "
                                r"\(at most 5 in a row, then one every 60 s\)\n", r.stderr)
        assert stored(server, user).endswith(b"\nflood 4 " + b"z" * 900)
        assert server.log.count("changes too often") == 1
        if IS_ROOT:  # root is not limited
            for i in range(8):
                assert run_cli(server, "set", "--user", user, f"root {i}").returncode == 0


def test_expired_status_is_not_answered() -> None:
    """A status set `--for 10s` is there, then gone after that: GET answers NONE, `fingerd
    status` says none is set, and the file is removed."""
    me = my_name()
    with status_server() as server:
        assert run_cli(server, "set", "--for", "10s", "Briefly").returncode == 0
        assert stored(server, me).endswith(b"Briefly")
        deadline = time.monotonic() + 25
        while stored(server, me) != b"NONE\n" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored(server, me) == b"NONE\n"
        assert run_cli(server).stdout == f"No status set for {me}.\n"
        assert not list(server.state.iterdir())


def test_statuses_survive_a_restart_and_crash_leftovers_are_cleaned() -> None:
    """Stop the service and start it again on the same state directory: the status is still
    there. A temporary file a crash left behind is removed at start; a damaged status file
    is ignored (logged), not half shown; a status stored for another UID under this name (an
    account deleted and created again) is not shown."""
    with status_server() as server:
        assert run_cli(server, "set", "Persistent").returncode == 0
        server.stop()
        leftover = server.state / ".tmp-1-1"
        leftover.write_bytes(b"half a sta")
        (server.state / "damaged").write_bytes(b"fingerd-status 1 1 2")
        (server.state / "nobody").write_bytes(b"fingerd-status 1 12345 0 0\nOld account")
        if IS_ROOT:
            for path in server.state.iterdir():
                os.chown(path, NOBODY, NOBODY)
        server.start()
        assert run_cli(server).stdout.startswith("Status:  Persistent\n")
        assert not leftover.exists()
        assert server.request(format_get("nobody")) == b"NONE\n"
        assert server.request(format_get("damaged")) == b"NONE\n"  # no such account either


@pytest.mark.parametrize("data", [
    b"", b"\n", b"HELLO\n", b"GET\n", b"GET a b\n", b"\x00\x01\x02garbage\xff\n",
    b"SET root 0 10\nshort", b"SET root 0", b"GET root", b"X" * 5000, b"\x16\x03\x01\x02\x00",
    b"GET root\nGET root\n", b"CLEAR root\nGET root\n",
])
def test_garbage_and_truncated_requests_get_one_error_line(data: bytes) -> None:
    """Garbage, a request cut short (the client half-closes early) or followed by more: one
    short ERR line and the connection closed; nothing is stored or removed, and the service
    answers the next client."""
    with status_server() as server:
        server.request(format_set(my_name(), "Untouched"))
        before = stored(server, my_name())
        reply = server.request(data)
        assert re.fullmatch(rb"ERR bad-request [ -~]+\n", reply), reply
        assert stored(server, my_name()) == before
        assert "Traceback" not in server.log


def test_a_slow_client_is_cut_off_and_does_not_hold_up_others() -> None:
    """A client that sends half a request and waits gets "ERR timeout" after the request
    timeout; meanwhile other clients are answered at once."""
    with status_server("--request-timeout", "3") as server, \
            socket.socket(socket.AF_UNIX) as slow:
        slow.settimeout(10)
        slow.connect(server.socket)
        slow.sendall(b"GET ro")
        started = time.monotonic()
        assert stored(server, "root") == b"NONE\n"
        assert time.monotonic() - started < 2  # not held up until the slow one's timeout
        assert read_to_eof(slow) == b"ERR timeout no complete request within 3 s\n"
        assert 2.5 < time.monotonic() - started < 8


def test_connections_per_uid_are_capped() -> None:
    """One UID cannot take every connection: the 65th open at once is told "busy"; once they
    are gone the service answers again."""
    with status_server("--request-timeout", "5") as server:
        held = []
        try:
            for _ in range(64):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(10)
                s.connect(server.socket)
                held.append(s)
            # Accepted in order, so the service counts all 64 before it sees the next.
            assert server.request(format_get("root")) == \
                b"ERR busy status service busy, try again later\n"
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 10
        while server.request(format_get("root")).startswith(b"ERR busy"):
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.mark.root
def test_concurrent_sets_leave_one_status_whole() -> None:
    """Many SETs of two long texts at once, with GETs in between: every GET sees one of the
    two texts whole (never a mix or a part), and the status left is one of them."""
    # (as root: root is not rate-limited; a user's burst would be over after 5)
    texts = ["A" * 1000, "B" * 1000]
    seen: list[bytes] = []
    errors: list[BaseException] = []
    with status_server() as server:
        server.request(format_set("root", texts[0]))

        def setter(text: str) -> None:
            try:
                for _ in range(15):
                    assert server.request(format_set("root", text)) == b"OK\n"
            except BaseException as e:
                errors.append(e)

        def getter() -> None:
            try:
                for _ in range(30):
                    seen.append(stored(server, "root"))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=setter, args=(t,)) for t in texts * 2]
        threads += [threading.Thread(target=getter) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(seen) == 60
        assert {s.split(b"\n", 1)[1] for s in seen} <= {t.encode() for t in texts}
        assert stored(server, "root").split(b"\n", 1)[1] in {t.encode() for t in texts}
        assert [p.name for p in server.state.iterdir()] == ["root"]


def test_idle_service_exits_by_itself() -> None:
    """With --idle-exit, the service exits 0 after that long without a connection (under
    systemd the socket starts it again)."""
    with status_server("--idle-exit", "1") as server:
        assert server.proc is not None
        assert server.proc.wait(timeout=15) == 0
        assert "idle for" in server.log


def test_status_server_refuses_a_state_directory_it_cannot_write() -> None:
    """A missing state directory is a one-line error and exit 1, not a traceback."""
    proc = subprocess.run([*(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                             if IS_ROOT else []), "/usr/bin/python3", "-m", "fingerd",
                           "status-server", "--socket", "/tmp/fingerd-never.sock",
                           "--state-dir", "/nonexistent/state"], capture_output=True,
                          text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(__import__("conftest").REPO)})
    assert proc.returncode == 1
    assert proc.stderr == ("fingerd status-server: /nonexistent/state: not a writable "
                           "directory\n")


def test_state_dir_given_on_the_command_line_wins_over_systemds(tmp_path: Path) -> None:
    """`--state-dir` is the admin's explicit choice: it is used even where systemd also sets
    $STATE_DIRECTORY (here a directory that cannot be written, which is then not looked at)."""
    proc = subprocess.run([*(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                             if IS_ROOT else []), "/usr/bin/python3", "-m", "fingerd",
                           "status-server", "--socket", "/tmp/fingerd-never.sock",
                           "--state-dir", "/nonexistent/state"], capture_output=True,
                          text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(__import__("conftest").REPO),
                               "STATE_DIRECTORY": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr == ("fingerd status-server: /nonexistent/state: not a writable "
                           "directory\n")
