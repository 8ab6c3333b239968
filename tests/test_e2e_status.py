"""End to end on a booted systemd: users set their own status (issue 11).

Real accounts (``useradd alice``, ``bob``, ``carol``), the real kernel (``runuser -u alice --
fingerd status set ...``: the status service learns who asks from SO_PEERCRED), the installed
units (fingerd-status.socket, fingerd-status.service with DynamicUser= and StateDirectory=) and
the real ``finger`` client, in one booted container of this module's own. The tests run in
the order written, as an admin and the users would: install, try before the service is on,
enable it, set, attack, clear, expire, hostile text, limits and floods, restarts and upgrades,
the long-running server, purge.

Needs root, debootstrap and systemd-nspawn (``make e2e-deps``); skipped with the reason
otherwise, failing instead in CI (CI=true). The .deb is ``$FINGERD_DEB``, else built.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from conftest import require
from e2e import DYNAMIC_UIDS, finger, journal_records, unit_property, wait_for

pytestmark = pytest.mark.systemd

CONFIG = "/etc/fingerd/fingerd.toml"
SOCKET_UNIT = "fingerd-status.socket"
SERVICE_UNIT = "fingerd-status.service"
STATE = "/var/lib/private/fingerd-status"
ENABLE = "systemctl enable --now fingerd-status.socket"
STATUS_CONFIG = """\
[[backend]]
type = "status"

[[backend]]
type = "local"
"""
RAW_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect("/run/fingerd/status.sock")
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
sys.stdout.buffer.write(s.recv(4096))
"""
FINGER_RAW = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 79), timeout=10)
s.sendall(sys.argv[1].encode() + b"\\r\\n")
data = b""
while len(data) < 65536:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.hex())
"""


@pytest.fixture(scope="module")
def box() -> Iterator[container.Container]:
    """A booted bookworm with three local users. Checked first, so that where no container
    can run, the test skips (or fails, in CI) before building anything."""
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as c:
        for user in ("alice", "bob", "carol"):
            # Homes others may enter, so that the local backend after the status one shows them.
            c.run(["useradd", "-m", "-s", "/bin/sh", user])
            c.run(["chmod", "0755", f"/home/{user}"])
        yield c


def as_user(box: container.Container, user: str, *args: str, stdin: bytes | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """`fingerd status ARGS` run by ``user`` (runuser: a real login's UID, no privileges)."""
    return box.run(["runuser", "-u", user, "--", "fingerd", "status", *args], check=False,
                   input=stdin, timeout=60)


def raw_finger(box: container.Container, query: str) -> bytes:
    """The exact bytes fingerd sends for ``query`` over TCP port 79 (no client filtering)."""
    return bytes.fromhex(box.run(["python3", "-c", FINGER_RAW, query]).stdout)


def uid(box: container.Container, user: str) -> int:
    return int(box.run(["id", "-u", user]).stdout)


# -- the tests, in order ------------------------------------------------------------------------
def test_installed_not_enabled_and_the_cli_says_what_to_enable(
        box: container.Container, deb: Path) -> None:
    """The package installs fingerd-status.socket and .service but neither enables nor starts
    them; until an admin does, `fingerd status` as a user fails (exit 1) and names the
    command that turns the service on."""
    box.copy_in(deb, "/root/")
    box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180)
    assert unit_property(box, SOCKET_UNIT, "UnitFileState") == "disabled"
    for unit in (SOCKET_UNIT, SERVICE_UNIT):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
    verify = box.run(["systemd-analyze", "verify", "--man=no", SOCKET_UNIT, SERVICE_UNIT])
    assert verify.stderr.strip() == "", verify.stderr
    box.write_file(CONFIG, STATUS_CONFIG)
    box.run(["fingerd", "check", "--no-probe"])
    for args in ([], ["set", "Hello"], ["clear"]):
        r = as_user(box, "alice", *args)
        assert r.returncode == 1, args
        assert "the status service is not running" in r.stderr, r.stderr
        assert ENABLE in r.stderr, r.stderr


def test_enable_the_socket(box: container.Container) -> None:
    """`systemctl enable --now fingerd-status.socket` puts a socket anyone may connect to at
    /run/fingerd/status.sock; the service is not started before somebody connects."""
    box.run(["systemctl", "enable", "--now", SOCKET_UNIT])
    assert unit_property(box, SOCKET_UNIT, "ActiveState") == "active"
    assert box.run(["stat", "-c", "%A %U", "/run/fingerd/status.sock"]).stdout.split() == [
        "srw-rw-rw-", "root"]
    assert unit_property(box, SERVICE_UNIT, "ActiveState") == "inactive"


def test_alice_sets_her_status_and_finger_shows_it(box: container.Container) -> None:
    """alice sets a status; `finger alice@localhost` answers it, and `finger -l` adds when it
    was set. The service runs as a transient unprivileged user; the journal records the
    change with alice's UID and name, and never the text."""
    r = as_user(box, "alice", "set", "Out to lunch, back at 2")
    assert (r.returncode, r.stdout) == (0, "Status of alice set (no expiry).\n"), r.stderr
    assert "Out to lunch, back at 2" in finger(box, "alice@localhost")
    long = finger(box, "alice@localhost", long=True)
    assert "Out to lunch, back at 2" in long and "(Status set " in long
    r = as_user(box, "alice")
    assert r.stdout.startswith("Status:  Out to lunch, back at 2\nSet:     "), r.stdout
    assert "Expires: never" in r.stdout
    assert unit_property(box, SERVICE_UNIT, "ActiveState") == "active"
    pid = int(unit_property(box, SERVICE_UNIT, "MainPID"))
    status = box.run(["cat", f"/proc/{pid}/status"]).stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.MULTILINE)
    assert uids and all(int(u) in DYNAMIC_UIDS for u in uids.groups()), status
    records = wait_for(lambda: journal_records(box, "STATUS_ACTION=set", "STATUS_USER=alice"),
                       "the journal record of alice's change")
    assert records[-1]["STATUS_CALLER_UID"] == str(uid(box, "alice"))
    assert records[-1]["_SYSTEMD_UNIT"] == SERVICE_UNIT
    # Everything the service and fingerd logged (runuser's own PAM log has its command line).
    for match in ("_SYSTEMD_UNIT=fingerd-status.service", "SYSLOG_IDENTIFIER=fingerd"):
        journal = box.run(["journalctl", "--no-pager", "-o", "json", match]).stdout
        assert "status of alice set by alice" in journal or "FINGER_USER" in journal, match
        assert "Out to lunch" not in journal, match


def test_bob_cannot_change_or_clear_alices_status_by_any_option(
        box: container.Container) -> None:
    """bob tries every way the CLI offers (--user before and after the action, set and
    clear) and a raw request naming alice: all are refused as "not permitted", and finger
    still shows alice's own status. bob may read it (finger is public)."""
    for args in (["set", "--user", "alice", "Hacked"], ["--user", "alice", "set", "Hacked"],
                 ["clear", "--user", "alice"], ["--user", "alice", "clear"]):
        r = as_user(box, "bob", *args)
        assert r.returncode == 1, args
        assert "not permitted" in r.stderr, (args, r.stderr)
    for raw in (b"SET alice 0 6\nHacked", b"CLEAR alice\n"):
        reply = box.run(["runuser", "-u", "bob", "--", "python3", "-c", RAW_CLIENT],
                        input=raw).stdout
        assert reply == ("ERR not-permitted not permitted: bob may change only their own "
                         "status, not alice's (root may change anyone's)\n"), reply
    assert "Out to lunch, back at 2" in finger(box, "alice@localhost")
    assert as_user(box, "bob", "--user", "alice").stdout.startswith(
        "Status:  Out to lunch, back at 2\n")
    wait_for(lambda: journal_records(box, f"STATUS_CALLER_UID={uid(box, 'bob')}",
                                     "STATUS_USER=alice"), "the refusal in the journal")


def test_root_may_act_for_alice_and_alice_clears_it(box: container.Container) -> None:
    """root sets alice's status with --user; finger shows it, alice sees it as hers; alice
    clears it and finger no longer shows it (the next backend, local, answers)."""
    box.run(["fingerd", "status", "set", "--user", "alice", "Set by root"])
    assert "Set by root" in finger(box, "alice@localhost")
    assert as_user(box, "alice").stdout.startswith("Status:  Set by root\n")
    r = as_user(box, "alice", "clear")
    assert (r.returncode, r.stdout) == (0, "Status of alice cleared.\n")
    answer = finger(box, "alice@localhost")
    assert "Set by root" not in answer
    assert "Login: alice" in finger(box, "alice@localhost", long=True)  # the local backend


def test_an_expired_status_is_no_longer_answered(box: container.Container) -> None:
    """`--for 5s`: answered at once, not any more a few seconds later."""
    r = as_user(box, "alice", "set", "--for", "5s", "Back in a moment")
    assert r.returncode == 0, r.stderr
    assert "Back in a moment" in finger(box, "alice@localhost")
    wait_for(lambda: "Back in a moment" not in finger(box, "alice@localhost"),
             "the status to expire", timeout=20)
    assert as_user(box, "alice").stdout == "No status set for alice.\n"


def test_terminal_escapes_reach_no_client(box: container.Container) -> None:
    """A status full of escape sequences and control characters: the bytes on port 79 have
    none of them (the output filter), only the text; the owner's `fingerd status` shows them
    escaped."""
    hostile = b"\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m alert\x07\x08\n"
    assert as_user(box, "alice", "set", "-", stdin=hostile).returncode == 0
    data = raw_finger(box, "alice")
    assert data == b"red alert\r\n", data
    assert "red alert" in finger(box, "alice@localhost")
    shown = as_user(box, "alice").stdout
    assert "\\x1b[31mred" in shown and "\x1b" not in shown


def test_limits_and_a_flood_get_clear_errors_and_keep_the_status(
        box: container.Container) -> None:
    """carol: a status over 1024 bytes, one of 5 lines, an empty one: exit 1 with the limit
    named, her status intact. Then a flood of sets: the first go through, then "too many
    changes" (exit 1); what finger shows is the last accepted status, whole."""
    assert as_user(box, "carol", "set", "Kept").returncode == 0
    for args, stdin, expect in ([["set", "x" * 1025], None, "the limit is 1024 bytes"],
                                [["set", "-"], b"1\n2\n3\n4\n5\n", "4 lines"],
                                [["set", ""], None, "empty status"]):
        r = as_user(box, "carol", *args, stdin=stdin)
        assert (r.returncode, expect in r.stderr) == (1, True), (args, r.stderr)
    assert "Kept" in finger(box, "carol@localhost")
    codes = [as_user(box, "carol", "set", f"flood {i} " + "z" * 500) for i in range(7)]
    accepted = sum(1 for r in codes if r.returncode == 0)
    assert [r.returncode for r in codes] == [0] * accepted + [1] * (7 - accepted)
    assert 0 < accepted < 7
    assert "too many changes: try again in" in codes[-1].stderr
    assert raw_finger(box, "carol") == f"flood {accepted - 1} ".encode() + b"z" * 500 + b"\r\n"


def test_status_survives_restarts_and_an_upgrade(box: container.Container, deb: Path) -> None:
    """`systemctl restart` of the socket and the service, a service stopped and started again
    by the next lookup, and reinstalling the package (what an upgrade does to the units):
    the status is still answered."""
    assert as_user(box, "alice", "set", "Still here").returncode == 0
    box.run(["systemctl", "restart", SOCKET_UNIT, SERVICE_UNIT])
    assert "Still here" in finger(box, "alice@localhost")
    box.run(["systemctl", "stop", SERVICE_UNIT])
    assert unit_property(box, SERVICE_UNIT, "ActiveState") == "inactive"
    assert "Still here" in finger(box, "alice@localhost")  # the socket starts it again
    box.run(["apt-get", "install", "-y", "--reinstall", f"/root/{deb.name}"], timeout=180)
    assert unit_property(box, SOCKET_UNIT, "ActiveState") == "active"
    assert "Still here" in finger(box, "alice@localhost")
    assert box.run(["ls", STATE]).stdout.split() == ["alice", "carol"]


def test_the_long_running_server_answers_the_same_bytes(box: container.Container) -> None:
    """Under fingerd-server.socket (`fingerd serve`), the status answers are the same bytes
    as under fingerd.socket, short and long form."""
    queries = ["alice", "/W alice", "carol", "nobody-here"]
    per_connection = [raw_finger(box, q) for q in queries]
    box.run(["systemctl", "start", "fingerd-server.socket"])
    try:
        assert [raw_finger(box, q) for q in queries] == per_connection
    finally:
        box.run(["systemctl", "stop", "fingerd-server.socket", "fingerd-server.service"])
        box.run(["systemctl", "start", "fingerd.socket"])
    assert per_connection[0] == b"Still here\r\n"
    assert b"Still here\r\n\r\n(Status set " in per_connection[1]


def test_purge_removes_the_statuses(box: container.Container) -> None:
    """`apt remove` stops the status units (the socket goes with its unit) and keeps the
    statuses; `apt purge` then removes the state directory, its symlink and the enablement
    symlink."""
    box.run(["apt-get", "remove", "-y", "fingerd"], timeout=180)
    for unit in (SOCKET_UNIT, SERVICE_UNIT):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
    assert box.run(["test", "-e", "/run/fingerd/status.sock"], check=False).returncode == 1
    assert box.run(["ls", STATE]).stdout.split() == ["alice", "carol"]
    box.run(["apt-get", "purge", "-y", "fingerd"], timeout=180)
    for path in (STATE, "/var/lib/fingerd-status",
                 f"/etc/systemd/system/sockets.target.wants/{SOCKET_UNIT}"):
        assert box.run(["test", "-e", path], check=False).returncode == 1, path
