"""End to end on a booted systemd: the .deb, the units, the real finger client (issue 4).

One container is booted for the module's main sequence (see tests/container.py) and the tests run
in the order written, like an admin would: install, configure, use, flood, restart, switch to the
long-running server (fingerd-server.socket: use, flood, reload, upgrade, stop) and back, remove,
purge.
A second container, at the end, starts from Debian's own fingerd (bsd-finger, run by inetd) and
installs ours over it: the upgrade that takes over port 79.

Needs root, debootstrap and systemd-nspawn (``make e2e-deps``); skipped with the reason
otherwise, and failing instead in CI (CI=true). The .deb is ``$FINGERD_DEB`` when set (``make
check`` builds it first), else the ``deb`` fixture (conftest.py) builds it with ``make -f mk/deb.mk
deb``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from conftest import REPO, require
from e2e import DYNAMIC_UIDS, finger, journal_records, unit_property, wait_for

pytestmark = pytest.mark.systemd

CLIENT = Path(__file__).with_name("e2e_client.py")
CONFIG = "/etc/fingerd/fingerd.toml"
STATIC_CONFIG = """\
[server]
# short, so that the silent-client test is quick
read_timeout = 2

[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
"""
FLOOD_CONNECTIONS = 3000
FLOOD_THREADS = 64
NETWORK_DROPIN = "/usr/share/fingerd/network.conf"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box() -> Iterator[container.Container]:
    """A booted bookworm with the test clients copied in. Checked first, so that where no
    container can run, the test skips (or fails, in CI) before building anything."""
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as c:
        c.copy_in(CLIENT, "/root/")
        yield c


def instances(box: container.Container) -> list[str]:
    out = box.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                   "fingerd@*"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def flood(box: container.Container) -> dict[str, object]:
    out = box.run(["python3", "/root/e2e_client.py", "flood", "127.0.0.1",
                   str(FLOOD_CONNECTIONS), str(FLOOD_THREADS)], timeout=180).stdout
    result = json.loads(out)
    print(f"flood: {result}")
    return result


# -- the tests, in the order an admin meets them ----------------------------------------------
def test_install_enables_and_starts_socket(box: container.Container, deb: Path) -> None:
    """`apt install ./fingerd_*.deb` works offline (every dependency is in the image) and, as
    Debian does for daemons, enables and starts fingerd.socket on port 79, IPv4 and IPv6;
    `systemctl enable --now fingerd.socket` then succeeds as the README says. The long-running
    server's units are installed, neither enabled nor started."""
    box.copy_in(deb, "/root/")
    # Offline: nothing to download, since the image has every dependency. (`--no-download`
    # would say so, but apt 2.6 then rejects the local path: "Pathname to install is not
    # absolute".)
    box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180)
    assert box.run(["systemctl", "is-enabled", "fingerd.socket"], check=False).stdout.strip() \
        == "enabled"
    box.run(["systemctl", "enable", "--now", "fingerd.socket"])
    assert unit_property(box, "fingerd.socket", "ActiveState") == "active"
    listening = box.run(["ss", "-Htln", "sport", "= :79"]).stdout
    assert re.search(r"(\*|\[::\]):79\b", listening), listening  # dual-stack [::]:79
    # The long-running server's units are installed but neither enabled nor started.
    assert unit_property(box, "fingerd-server.socket", "UnitFileState") == "disabled"
    for unit in ("fingerd-server.socket", "fingerd-server.service"):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
    # The installed units load without a warning (man pages: no man-db in the image).
    verify = box.run(["systemd-analyze", "verify", "--man=no", "fingerd.socket",
                      "fingerd@probe.service", "fingerd-server.socket",
                      "fingerd-server.service"])
    assert verify.stderr.strip() == "", verify.stderr
    conffiles = box.run(["dpkg-query", "-W", "-f", "${Conffiles}", "fingerd"]).stdout
    assert CONFIG in conffiles
    box.run(["test", "-f", "/usr/share/man/man8/fingerd.8.gz"])
    box.run("ls /usr/share/doc/fingerd/README.md*")  # compressed when over 4 kB
    box.run(["test", "-f", "/usr/share/man/man5/fingerd.toml.5.gz"])
    box.run(["test", "-f", NETWORK_DROPIN])  # not under /usr/share/doc: it must stay


def imported_modules(importtime_output: str) -> set[str]:
    """The module names in `python3 -X importtime` output."""
    return {m[1] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$",
                                      importtime_output, re.MULTILINE)}


def test_installed_launcher_is_the_lean_one(box: container.Container) -> None:
    """/usr/bin/fingerd is bin/fingerd, not the console script generated from [project.scripts]:
    its shebang keeps `-I` through dh_python3, and a handler run (config from the cache, as
    under fingerd@.service) imports fingerd's handler but not `re`, which the generated
    script imports first (about 7 ms of CPU per connection)."""
    installed = box.run(["cat", "/usr/bin/fingerd"]).stdout
    assert installed.splitlines()[0] == "#!/usr/bin/python3 -I"
    assert installed == (REPO / "bin" / "fingerd").read_text()
    box.run(["test", "-x", "/usr/bin/fingerd"])
    # Twice: the first run parses the TOML (tomllib imports re) and fills the cache, the second
    # reads the cache, as every connection but the first does.
    run = ("mkdir -p /tmp/launcher-cache && CACHE_DIRECTORY=/tmp/launcher-cache "
           f"python3 -I -X importtime /usr/bin/fingerd --config {CONFIG} </dev/null 2>&1")
    box.run(run)
    modules = imported_modules(box.run(run).stdout)
    assert "fingerd.handler" in modules, modules
    assert "re" not in modules, sorted(modules)
    box.run(["rm", "-rf", "/tmp/launcher-cache"])


def test_finger_answers_over_ipv4_and_ipv6(box: container.Container) -> None:
    """The real `finger` client gets the static entry the test writes into the config, over
    IPv4 (127.0.0.1) and IPv6 (ip6-localhost, i.e. ::1 from /etc/hosts), and the journal
    records each query's remote address, user, backend and outcome."""
    box.write_file(CONFIG, STATIC_CONFIG)
    box.run(["fingerd", "check"])
    for target, address in (("moshez@127.0.0.1", "127.0.0.1"),
                            ("moshez@ip6-localhost", "::1"),
                            ("moshez@localhost", None)):
        assert "Happy and well" in finger(box, target), target
        if address is None:
            continue
        record = wait_for(lambda a=address: [r for r in journal_records(
            box, "SYSLOG_IDENTIFIER=fingerd", f"REMOTE_ADDR={a}")], f"a record from {address}")
        assert record[-1]["FINGER_USER"] == "moshez"
        assert record[-1]["FINGER_OUTCOME"] == "answered"
        assert record[-1]["FINGER_BACKEND"] == "static"
    assert "Happy and well" in finger(box, "moshez@localhost", long=True)


def test_default_install_answers_from_the_no_network_sandbox(box: container.Container) -> None:
    """As installed, fingerd@.service has no network (a namespace of its own, AF_UNIX only,
    no IP): systemd says so, a running instance's network namespace is not the host's, it
    still answers (the client's connection is passed in), and `fingerd check` of the static
    config says the network is not needed and not given."""
    probe = "fingerd@probe.service"
    assert unit_property(box, probe, "PrivateNetwork") == "yes"
    assert unit_property(box, probe, "RestrictAddressFamilies") == "AF_UNIX"
    assert "0.0.0.0/0" in unit_property(box, probe, "IPAddressDeny").split()
    # A client that sends nothing keeps its instance running for read_timeout (2 s).
    box.run(["systemd-run", "--unit=silent-client", "--collect", "python3",
             "/root/e2e_client.py", "silent", "127.0.0.1"])
    unit = wait_for(lambda: instances(box), "the silent client's instance")[0]
    pid = unit_property(box, unit, "MainPID")
    namespaces = box.run(["readlink", f"/proc/{pid}/ns/net", "/proc/1/ns/net"]).stdout.split()
    assert len(namespaces) == 2 and namespaces[0] != namespaces[1], namespaces
    wait_for(lambda: not instances(box), "the silent client's instance to end", timeout=15)
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")
    check = box.run(["fingerd", "check"])
    assert "  network: not needed; fingerd@.service allows none" in check.stdout.splitlines()


def test_handler_runs_as_unprivileged_dynamic_user(box: container.Container) -> None:
    """Every handler ran as a transient user from systemd's DynamicUser= range, never root,
    without capabilities, in its own fingerd@ instance; an unknown user is logged as such."""
    assert "Happy and well" not in finger(box, "nobody-here@127.0.0.1")
    wait_for(lambda: journal_records(box, "SYSLOG_IDENTIFIER=fingerd",
                                     "FINGER_USER=nobody-here"), "the unknown user's record")
    records = journal_records(box, "SYSLOG_IDENTIFIER=fingerd")
    assert records
    running = instances(box)
    for r in records:
        assert int(r["_UID"]) in DYNAMIC_UIDS, r
        assert r["_CAP_EFFECTIVE"] == "0", r
        assert r["_SYSTEMD_UNIT"].startswith("fingerd@"), r
        assert r["_SYSTEMD_UNIT"] not in running  # gone once answered
    # (A client that sent nothing, as the sandbox test's, has no FINGER_USER.)
    outcomes = {r["FINGER_USER"]: r["FINGER_OUTCOME"] for r in records if "FINGER_USER" in r}
    assert outcomes["nobody-here"] == "no such user"


def test_flood_would_stop_a_socket_with_the_default_trigger_limit(
        box: container.Container) -> None:
    """Control for the next test: with systemd's default trigger limit (200 in 2 s) the same
    flood stops the socket for good ("trigger-limit-hit"), so the flood is strong enough to
    show the fix. The socket is put back afterwards."""
    dropin = "/run/systemd/system/fingerd.socket.d/default-trigger-limit.conf"
    box.write_file(dropin, "[Socket]\nTriggerLimitIntervalSec=2s\nTriggerLimitBurst=200\n")
    try:
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "restart", "fingerd.socket"])
        flood(box)
        assert unit_property(box, "fingerd.socket", "Result") == "trigger-limit-hit"
        assert unit_property(box, "fingerd.socket", "ActiveState") == "failed"
    finally:
        box.run(["rm", "-f", dropin])
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "reset-failed", "fingerd.socket"], check=False)
        box.run(["systemctl", "restart", "fingerd.socket"])
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")


def test_flood_does_not_stop_the_socket(box: container.Container) -> None:
    """3000 connections from inside the container, 64 at a time, as fast as they go: the
    socket stays active (no trigger limit), MaxConnectionsPerSource= sheds the excess, every
    instance ends by itself, and finger still answers without an admin."""
    result = flood(box)
    assert result["connections"] == FLOOD_CONNECTIONS
    outcomes = result["outcomes"]
    assert isinstance(outcomes, dict)
    assert outcomes.get("answered", 0) > 0
    assert "refused" not in outcomes, outcomes  # the port never closed
    assert unit_property(box, "fingerd.socket", "ActiveState") == "active"
    assert unit_property(box, "fingerd.socket", "Result") == "success"
    wait_for(lambda: not instances(box), "the flood's instances to finish", timeout=60)
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")
    assert "Happy and well" in finger(box, "moshez@ip6-localhost")


def test_silent_client_is_disconnected_and_its_instance_ends(box: container.Container) -> None:
    """A client that connects and sends nothing is hung up on after read_timeout (2 s here,
    well before RuntimeMaxSec=), its instance is gone, and the journal says "timeout"."""
    result = json.loads(box.run(["python3", "/root/e2e_client.py", "silent", "127.0.0.1"],
                                timeout=90).stdout)
    assert result["ended"] in ("closed", "reset"), result
    assert 1.5 <= float(result["seconds"]) < 10, result
    port = result["local_port"]
    wait_for(lambda: not [u for u in instances(box) if u.endswith(f":{port}.service")],
             "the silent client's instance to end", timeout=10)
    records = wait_for(lambda: [r for r in journal_records(box, "SYSLOG_IDENTIFIER=fingerd")
                                if r.get("_SYSTEMD_UNIT", "").endswith(f":{port}.service")],
                       "the silent client's record")
    assert records[-1]["FINGER_OUTCOME"] == "timeout"


def sandbox_records(box: container.Container) -> list[dict[str, str]]:
    return journal_records(box, "SYSLOG_IDENTIFIER=fingerd", "FINGER_SANDBOX=no-network")


def test_file_local_and_http_backends_answer(box: container.Container) -> None:
    """Each backend works inside the sandbox: a status file entry (file) and a local user's
    world-readable ~/.plan (local: home directories are read-only to the handler, not hidden)
    reach the finger client at once. The http backend, a web service on the container's
    loopback, needs the network the default unit does not give: `fingerd check` fails and
    prints the one command that allows it, the handler logs the same to the journal and the
    lookup fails; after that command, check passes and the http answer arrives. Removing the
    drop-in takes the network away again."""
    box.run("useradd -m -s /bin/sh alice && chmod o+x /home/alice"
            " && echo 'Writing the finger RFC' > /home/alice/.plan"
            " && chmod o+r /home/alice/.plan")
    box.write_file("/var/lib/fingerd/status", "bob: Out to lunch\n")
    box.write_file("/srv/www/carol.txt", "Working from home\n")
    box.run(["systemd-run", "--unit=test-http", "--", "python3", "-m", "http.server",
             "--bind", "127.0.0.1", "--directory", "/srv/www", "8080"])
    dropin = "/etc/systemd/system/fingerd@.service.d/network.conf"
    try:
        wait_for(lambda: box.run(["ss", "-Htln", "sport = :8080"]).stdout.strip(),
                 "the test web server")
        box.write_file(CONFIG, STATIC_CONFIG + """
[[backend]]
type = "file"
path = "/var/lib/fingerd/status"

[[backend]]
type = "local"

[[backend]]
type = "http"
url = "http://127.0.0.1:8080/{user}.txt"
""")
        # Without the network: loud in fingerd check, with the remedy.
        check = box.run(["fingerd", "check"], check=False)
        assert check.returncode == 3, check  # valid, but a backend cannot work as configured
        assert "needs the network (backend 'http' (type http))" in check.stdout
        assert "fingerd@.service allows none (PrivateNetwork=yes" in check.stdout
        command = remedy(check.stdout)
        assert command == (f"mkdir -p /etc/systemd/system/fingerd@.service.d && ln -sf "
                           f"{NETWORK_DROPIN} {dropin} && systemctl daemon-reload"), check.stdout
        assert "Out to lunch" in finger(box, "bob@127.0.0.1")
        assert "Writing the finger RFC" in finger(box, "alice@127.0.0.1", long=True)
        # ... and in the journal: the handler's record, and the http lookup failing.
        assert "Working from home" not in finger(box, "carol@127.0.0.1")
        records = wait_for(lambda: sandbox_records(box), "the handler's sandbox record")
        message = records[-1]["MESSAGE"]
        assert "needs the network (backend 'http' (type http))" in message
        assert "RestrictAddressFamilies= allows no IP sockets" in message
        assert "PrivateNetwork=yes" in message
        assert command in message
        assert records[-1]["PRIORITY"] == "3"
        # The command fingerd check printed, as the admin would paste it.
        box.run(command)
        box.run(["test", "-L", dropin])
        check = box.run(["fingerd", "check"])
        assert ("  network: needed (backend 'http' (type http)); fingerd@.service allows it"
                in check.stdout.splitlines()), check.stdout
        assert unit_property(box, "fingerd@probe.service", "PrivateNetwork") == "no"
        before = len(sandbox_records(box))
        assert "Working from home" in finger(box, "carol@127.0.0.1")
        assert "Out to lunch" in finger(box, "bob@127.0.0.1")
        assert len(sandbox_records(box)) == before
    finally:
        box.run(["systemctl", "stop", "test-http.service"], check=False)
        box.run(["rm", "-f", dropin])
        box.run(["systemctl", "daemon-reload"])
        box.write_file(CONFIG, STATIC_CONFIG)
    assert unit_property(box, "fingerd@probe.service", "PrivateNetwork") == "yes"
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")


def test_restart_socket_keeps_serving(box: container.Container) -> None:
    """`systemctl restart fingerd.socket` brings the socket back on port 79 and it answers."""
    box.run(["systemctl", "restart", "fingerd.socket"])
    assert unit_property(box, "fingerd.socket", "ActiveState") == "active"
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")


# -- the long-running server: fingerd-server.socket (Accept=no) + fingerd-server.service ----------
SERVER = "fingerd-server.service"
SERVER_SOCKET = "fingerd-server.socket"


def main_pid(box: container.Container) -> int:
    return int(unit_property(box, SERVER, "MainPID"))


def server_records(box: container.Container, pid: int, *matches: str) -> list[dict[str, str]]:
    """fingerd's journal records from process ``pid`` of fingerd-server.service."""
    return journal_records(box, "SYSLOG_IDENTIFIER=fingerd", f"_SYSTEMD_UNIT={SERVER}",
                           f"_PID={pid}", *matches)


def query_records(box: container.Container, pid: int) -> list[dict[str, str]]:
    """Only the per-query records (with FINGER_OUTCOME), and only the fields counted here."""
    out = box.run(["journalctl", "--no-pager", "-o", "json",
                   "--output-fields=FINGER_OUTCOME,FINGER_USER,REMOTE_ADDR,_PID,_UID",
                   "SYSLOG_IDENTIFIER=fingerd", f"_SYSTEMD_UNIT={SERVER}", f"_PID={pid}"],
                  timeout=60).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r for r in records if "FINGER_OUTCOME" in r]


def set_answer(box: container.Container, text: str) -> None:
    box.write_file(CONFIG, STATIC_CONFIG.replace("Happy and well", text))


def test_server_socket_takes_port_79_over_from_fingerd_socket(box: container.Container) -> None:
    """Starting fingerd-server.socket stops fingerd.socket (Conflicts=) and takes port 79 over,
    IPv4 and IPv6, without a bind race; the README's two commands then make the switch
    permanent: fingerd.socket disabled, fingerd-server.socket enabled."""
    assert unit_property(box, "fingerd.socket", "ActiveState") == "active"
    box.run(["systemctl", "start", SERVER_SOCKET])
    assert unit_property(box, "fingerd.socket", "ActiveState") == "inactive"
    assert unit_property(box, SERVER_SOCKET, "ActiveState") == "active"
    box.run(["systemctl", "disable", "--now", "fingerd.socket"])
    box.run(["systemctl", "enable", "--now", SERVER_SOCKET])
    assert unit_property(box, "fingerd.socket", "UnitFileState") == "disabled"
    assert unit_property(box, SERVER_SOCKET, "UnitFileState") == "enabled"
    assert unit_property(box, SERVER_SOCKET, "Accept") == "no"
    listening = box.run(["ss", "-Htln", "sport", "= :79"]).stdout
    assert re.search(r"(\*|\[::\]):79\b", listening), listening


def test_server_answers_from_one_unprivileged_process(box: container.Container) -> None:
    """`finger` over IPv4 and IPv6 answers from the static entry; the first connection starts
    fingerd-server.service, which reaches active (running) through Type=notify (READY=1), as
    one process of a transient non-root user without capabilities; the journal holds the
    per-query records (remote address, user, backend, outcome), all from that one PID."""
    for target in ("moshez@127.0.0.1", "moshez@ip6-localhost", "moshez@localhost"):
        assert "Happy and well" in finger(box, target), target
    assert unit_property(box, SERVER, "Type") == "notify"
    assert unit_property(box, SERVER, "ActiveState") == "active"
    assert unit_property(box, SERVER, "SubState") == "running"
    pid = main_pid(box)
    # Every process of the container, with the unit it belongs to (its cgroup).
    units = [line.split() for line in box.run(["ps", "-e", "-o", "pid=,unit="]).stdout
             .splitlines()]
    assert [p for p, *unit in units if unit == [SERVER]] == [str(pid)], units
    status = box.run(["cat", f"/proc/{pid}/status"]).stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.MULTILINE)
    assert uids, status
    assert all(int(uid) in DYNAMIC_UIDS for uid in uids.groups()), uids.groups()
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
    assert box.run(["ps", "-o", "args=", "-p", str(pid)]).stdout.strip() \
        == "/usr/bin/python3 -I /usr/bin/fingerd serve"
    records = wait_for(lambda: (r := server_records(box, pid, "FINGER_USER=moshez"))
                       and len(r) >= 3 and r, "the three queries' records")
    for r in records:
        assert r["FINGER_OUTCOME"] == "answered", r
        assert r["FINGER_BACKEND"] == "static", r
        assert int(r["_UID"]) in DYNAMIC_UIDS, r
    addresses = {r["REMOTE_ADDR"] for r in records}
    assert "::1" in addresses, addresses
    # The socket is [::]:79 for both families: `fingerd serve` sees an IPv4 client as
    # ::ffff:127.0.0.1 and logs it as 127.0.0.1, as fingerd@.service ($REMOTE_ADDR) does.
    assert "127.0.0.1" in addresses, addresses
    assert not any(a.startswith("::ffff:") for a in addresses), addresses
    assert any(r["MESSAGE"].startswith("serving on ") for r in server_records(box, pid))


def test_server_survives_a_flood(box: container.Container) -> None:
    """3000 connections from inside the container, 64 at a time, as fast as they go: the
    service stays active in the same process (no restart), every connection gets a reply (the
    answer, or a "busy" line beyond [server] max_connections_per_source), each is logged once,
    and finger still answers over IPv4 and IPv6."""
    pid = main_pid(box)
    before = len(query_records(box, pid))
    result = flood(box)
    assert result["connections"] == FLOOD_CONNECTIONS
    outcomes = result["outcomes"]
    assert isinstance(outcomes, dict)
    assert set(outcomes) == {"answered"}, outcomes  # every connection got a reply
    assert unit_property(box, SERVER, "ActiveState") == "active"
    assert main_pid(box) == pid
    assert unit_property(box, SERVER, "NRestarts") == "0"
    records = wait_for(lambda: (r := query_records(box, pid)[before:])
                       and len(r) >= FLOOD_CONNECTIONS and r, "the flood's records")
    logged = collections.Counter(r["FINGER_OUTCOME"] for r in records)
    print(f"flood, journal outcomes: {dict(logged)}")
    assert len(records) == FLOOD_CONNECTIONS, logged
    assert logged["answered"] > 0, logged
    assert set(logged) <= {"answered", "busy"}, logged
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")
    assert "Happy and well" in finger(box, "moshez@ip6-localhost")


def test_server_reload_picks_up_an_edited_config(box: container.Container) -> None:
    """`systemctl reload fingerd-server.service` (SIGHUP) makes the running process read the
    edited /etc/fingerd/fingerd.toml: the new answer comes from the same MainPID, and the
    journal says the configuration was reloaded."""
    pid = main_pid(box)
    set_answer(box, "Reloaded and well")
    box.run(["systemctl", "reload", SERVER])
    wait_for(lambda: server_records(box, pid, "MESSAGE=configuration reloaded from " + CONFIG),
             "the reload's record")
    assert "Reloaded and well" in finger(box, "moshez@127.0.0.1")
    assert main_pid(box) == pid
    assert unit_property(box, SERVER, "ActiveState") == "active"


def test_server_reload_with_a_broken_config_keeps_the_running_one(
        box: container.Container) -> None:
    """`systemctl reload` with a broken config fails visibly (ExecReload= validates first, as
    the service's user), its error in the journal at priority err naming the file; the process
    keeps answering from the configuration it had; fixing the file and reloading works."""
    pid = main_pid(box)
    box.write_file(CONFIG, STATIC_CONFIG + "\n[[backend]]\ntype = \"no-such-backend\n")
    assert box.run(["systemctl", "reload", SERVER], check=False).returncode != 0
    errors = box.run(["journalctl", "--no-pager", "-p", "err", "-u", SERVER]).stdout
    assert f"{CONFIG}:" in errors and "TOML syntax" in errors, errors
    assert "Reloaded and well" in finger(box, "moshez@127.0.0.1")
    assert main_pid(box) == pid
    assert unit_property(box, SERVER, "ActiveState") == "active"
    box.write_file(CONFIG, STATIC_CONFIG)
    box.run(["systemctl", "reload", SERVER])
    wait_for(lambda: "Happy and well" in finger(box, "moshez@127.0.0.1"),
             "the fixed config's answer")
    assert main_pid(box) == pid


def remedy(check_output: str) -> str:
    """The command `fingerd check` gives after "To allow it, run:"."""
    lines = check_output.splitlines()
    return next(lines[n + 1].strip() for n, line in enumerate(lines)
                if line.endswith("To allow it, run:"))


def test_check_names_the_server_while_it_serves(box: container.Container) -> None:
    """While fingerd-server.socket serves, the unit `fingerd check` looks at is
    fingerd-server.service (no network either, as shipped): a config with forwarding fails the
    check, and the command it gives links the drop-in for the server and restarts it."""
    box.write_file(CONFIG, STATIC_CONFIG.replace("[server]\n", "[server]\nforwarding = true\n"))
    try:
        check = box.run(["fingerd", "check"], check=False)
        assert check.returncode == 3, check
        assert "needs the network ([server] forwarding = true), but fingerd-server.service " \
               "allows none" in check.stdout
        assert remedy(check.stdout).endswith(
            f"ln -sf {NETWORK_DROPIN} /etc/systemd/system/fingerd-server.service.d/network.conf"
            " && systemctl daemon-reload && systemctl try-restart fingerd-server.service")
    finally:
        box.write_file(CONFIG, STATIC_CONFIG)
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")


def test_server_upgrade_restarts_it_and_keeps_the_switch(
        box: container.Container, deb: Path) -> None:
    """Installing the package again (an upgrade, as far as the maintainer scripts know)
    restarts the running server, so that it runs the new code, and leaves the admin's switch
    alone: fingerd.socket stays disabled and stopped, fingerd-server.socket enabled."""
    pid = main_pid(box)
    box.run(["apt-get", "install", "-y", "--reinstall", f"/root/{deb.name}"], timeout=180)
    assert unit_property(box, "fingerd.socket", "ActiveState") == "inactive"
    assert unit_property(box, "fingerd.socket", "UnitFileState") == "disabled"
    assert unit_property(box, SERVER_SOCKET, "UnitFileState") == "enabled"
    assert unit_property(box, SERVER_SOCKET, "ActiveState") == "active"
    # Restarted by the package (try-restart), not just started again by the next connection.
    assert unit_property(box, SERVER, "ActiveState") == "active"
    assert main_pid(box) not in (0, pid)
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")


def test_server_stop_answers_the_query_in_flight_and_exits_cleanly(
        box: container.Container) -> None:
    """`systemctl stop` (SIGTERM) while a client is connected: the server stops listening,
    still answers that client, exits with status 0 and logs "stopped"; the unit ends inactive,
    not failed, and port 79 is free."""
    pid = main_pid(box)
    result = json.loads(box.run(["python3", "/root/e2e_client.py", "inflight", "127.0.0.1",
                                 "systemctl", "stop", SERVER_SOCKET, SERVER],
                                timeout=120).stdout)
    assert "Happy and well" in result["answer"], result
    assert result["status"] == 0, result
    for unit in (SERVER, SERVER_SOCKET):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
        assert unit_property(box, unit, "Result") == "success", unit
    assert unit_property(box, SERVER, "ExecMainStatus") == "0"
    assert unit_property(box, SERVER, "ExecMainCode") == "1"  # CLD_EXITED: not killed
    assert server_records(box, pid, "MESSAGE=stopped")
    assert box.run(["ss", "-Htln", "sport", "= :79"]).stdout.strip() == ""


def test_switching_back_to_fingerd_socket(box: container.Container) -> None:
    """With the server running, `systemctl disable fingerd-server.socket` and `systemctl enable
    --now fingerd.socket` switch back: starting fingerd.socket stops the server and its socket
    (Conflicts=) before it binds port 79, and each query runs in a fingerd@ instance again."""
    box.run(["systemctl", "start", SERVER_SOCKET])
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")
    assert unit_property(box, SERVER, "ActiveState") == "active"
    box.run(["systemctl", "disable", SERVER_SOCKET])
    box.run(["systemctl", "enable", "--now", "fingerd.socket"])
    assert unit_property(box, "fingerd.socket", "ActiveState") == "active"
    for unit in (SERVER, SERVER_SOCKET):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
    assert unit_property(box, SERVER_SOCKET, "UnitFileState") == "disabled"
    assert "Happy and well" not in finger(box, "back-again@127.0.0.1")
    records = wait_for(lambda: journal_records(box, "SYSLOG_IDENTIFIER=fingerd",
                                               "FINGER_USER=back-again"), "the query's record")
    assert records[-1]["_SYSTEMD_UNIT"].startswith("fingerd@"), records[-1]
    assert "Happy and well" in finger(box, "moshez@ip6-localhost")


def test_remove_keeps_config_and_purge_removes_everything(box: container.Container) -> None:
    """`apt remove` stops the socket and removes the units but keeps the admin's config (and
    the link that gave fingerd@.service the network); `apt purge` then removes the config, the
    cache systemd made for the service, the enablement symlink and that link: nothing of the
    package is left."""
    # The admin had given the per-connection unit the network, the documented way.
    link = "/etc/systemd/system/fingerd@.service.d/network.conf"
    box.run(f"mkdir -p {os.path.dirname(link)} && ln -sf {NETWORK_DROPIN} {link}")
    box.run(["apt-get", "remove", "-y", "fingerd"], timeout=120)
    box.run(["test", "-f", CONFIG])
    assert "moshez" in box.run(["cat", CONFIG]).stdout  # the admin's edit, not the default
    box.run(["test", "-L", link])  # the admin's, until purge
    for unit in ("fingerd.socket", "fingerd@.service", SERVER_SOCKET, SERVER):
        box.run(["test", "!", "-e", f"/lib/systemd/system/{unit}"])
    assert box.run(["ss", "-Htln", "sport", "= :79"]).stdout.strip() == ""
    assert box.run(["systemctl", "is-active", "fingerd.socket"], check=False).stdout.strip() \
        in ("inactive", "failed")

    box.run(["apt-get", "purge", "-y", "fingerd"], timeout=120)
    for path in ("/etc/fingerd", "/var/cache/fingerd", "/var/cache/private/fingerd",
                 "/etc/systemd/system/sockets.target.wants/fingerd.socket",
                 "/usr/bin/fingerd", link, os.path.dirname(link)):
        box.run(["test", "!", "-e", path])
    status = box.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "fingerd"],
                     check=False).stdout
    assert status in ("", "not-installed"), status


def test_remove_stops_the_long_running_server_and_purge_disables_it(
        box: container.Container, deb: Path) -> None:
    """On a host switched to the long-running server (fingerd.socket disabled,
    fingerd-server.socket enabled and serving), `apt remove` stops the server and its socket
    and frees port 79, though they were never started by the package; `apt purge` removes the
    enablement symlinks of both sockets."""
    box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180)
    box.write_file(CONFIG, STATIC_CONFIG)
    box.run(["systemctl", "disable", "--now", "fingerd.socket"])
    box.run(["systemctl", "enable", "--now", SERVER_SOCKET])
    assert "Happy and well" in finger(box, "moshez@127.0.0.1")
    pid = main_pid(box)
    assert pid

    box.run(["apt-get", "remove", "-y", "fingerd"], timeout=120)
    for unit in (SERVER, SERVER_SOCKET):
        assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() \
            == "inactive", unit
    box.run(["test", "!", "-e", f"/proc/{pid}"])
    assert box.run(["ss", "-Htln", "sport", "= :79"]).stdout.strip() == ""

    box.run(["apt-get", "purge", "-y", "fingerd"], timeout=120)
    for path in ("/etc/fingerd", "/etc/systemd/system/sockets.target.wants/fingerd.socket",
                 f"/etc/systemd/system/sockets.target.wants/{SERVER_SOCKET}"):
        box.run(["test", "!", "-e", path])


# -- taking over from Debian's fingerd, in a container of its own -----------------------------
# Debian's finger server (source bsd-finger) is also a binary package called `fingerd`, run by
# inetd. Ours carries the epoch 1 so that installing it over Debian's is an upgrade; its postinst
# removes the inetd entry Debian's prerm leaves disabled. The .debs of Debian's fingerd and of
# openbsd-inetd are in the cached image (container.TAKEOVER_DEBS), so this stays offline.
INETD_CONF = "/etc/inetd.conf"


@pytest.fixture(scope="class")
def host_with_debian_fingerd() -> Iterator[container.Container]:
    """A freshly booted bookworm, separate from `box`: nothing of ours was ever installed."""
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as c:
        yield c


def port_79_owner(box: container.Container) -> str:
    """The process listening on TCP port 79, as `ss -p` names it ("" when none)."""
    out = box.run(["ss", "-Htlnp", "sport", "= :79"]).stdout
    names = set(re.findall(r'\(\("([^"]+)"', out))
    return " ".join(sorted(names))


def fingerd_entries(box: container.Container) -> list[str]:
    """Lines of /etc/inetd.conf that name in.fingerd, enabled or disabled ("#<off># ...")."""
    text = box.run(["cat", INETD_CONF]).stdout
    return [line for line in text.splitlines() if "in.fingerd" in line]


class TestTakeoverFromDebianFingerd:
    """The tests run in order on one container: Debian's fingerd first, then ours over it."""

    def test_debian_fingerd_serves_port_79_through_inetd(
            self, host_with_debian_fingerd: container.Container) -> None:
        """The starting point: Debian's fingerd 0.17-17 (with openbsd-inetd) installs offline,
        registers in.fingerd in /etc/inetd.conf, and inetd answers finger on port 79."""
        c = host_with_debian_fingerd
        debs = container.TAKEOVER_DEBS
        c.run(f"apt-get install -y --no-install-recommends {debs}/*.deb", timeout=240)
        theirs = c.run(f"dpkg-deb -f {debs}/fingerd_*.deb Version").stdout.strip()
        assert c.run(["dpkg-query", "-W", "-f", "${Version}", "fingerd"]).stdout == theirs
        enabled = [e for e in fingerd_entries(c) if re.match(r"finger\s", e)]
        assert enabled and enabled[0].split()[-1] == "/usr/sbin/in.fingerd", fingerd_entries(c)
        wait_for(lambda: port_79_owner(c) == "inetd", "inetd to listen on port 79")
        assert "Login: root" in finger(c, "root@localhost")  # in.fingerd runs `finger root`

    def test_installing_ours_upgrades_and_takes_over_port_79(
            self, host_with_debian_fingerd: container.Container, deb: Path) -> None:
        """`apt-get install ./fingerd_*.deb` over Debian's fingerd is an upgrade to 1:<version>:
        /usr/sbin/in.fingerd is gone, /etc/inetd.conf keeps no in.fingerd line (neither the
        enabled one nor the disabled one Debian's prerm leaves), inetd has let go of port 79,
        fingerd.socket holds it, and `finger moshez@localhost` answers from a static entry."""
        c = host_with_debian_fingerd
        ours = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        assert ours.startswith("1:"), ours
        c.copy_in(deb, "/root/")
        out = c.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180).stdout
        assert re.search(r"^1 upgraded, 0 newly installed, 0 to remove", out, re.MULTILINE), out
        assert c.run(["dpkg-query", "-W", "-f", "${Version}", "fingerd"]).stdout == ours
        c.run(["test", "!", "-e", "/usr/sbin/in.fingerd"])
        assert fingerd_entries(c) == []
        assert unit_property(c, "fingerd.socket", "ActiveState") == "active"
        assert port_79_owner(c) == "systemd"
        # inetd itself keeps running, for whatever else it serves.
        assert unit_property(c, "openbsd-inetd.service", "ActiveState") == "active"
        c.write_file(CONFIG, STATIC_CONFIG)
        assert "Happy and well" in finger(c, "moshez@localhost")

    def test_archive_fingerd_does_not_replace_ours(
            self, host_with_debian_fingerd: container.Container) -> None:
        """With the Debian archive's package lists (bookworm main, which has fingerd 0.17-17),
        apt sees ours as the newer version: `apt-get upgrade` and `apt-get install fingerd`
        leave it alone (simulated: the container has no network, and needs none for this)."""
        c = host_with_debian_fingerd
        policy = c.run(["apt-cache", "policy", "fingerd"]).stdout
        assert "0.17-17" in policy, policy  # the archive's version is known to apt
        installed = re.search(r"Installed: (\S+)", policy)
        candidate = re.search(r"Candidate: (\S+)", policy)
        assert installed and candidate, policy
        assert installed[1].startswith("1:") and candidate[1] == installed[1], policy
        upgrade = c.run(["apt-get", "--simulate", "upgrade"]).stdout
        assert not re.search(r"^Inst fingerd ", upgrade, re.MULTILINE), upgrade
        install = c.run(["apt-get", "--simulate", "install", "fingerd"]).stdout
        assert "fingerd is already the newest version" in install, install

    def test_going_back_to_debians_fingerd(
            self, host_with_debian_fingerd: container.Container) -> None:
        """The way back the README gives: `apt purge fingerd`, then installing Debian's again
        brings back its inetd entry, and inetd answers on port 79 once more."""
        c = host_with_debian_fingerd
        c.run(["apt-get", "purge", "-y", "fingerd"], timeout=120)
        assert port_79_owner(c) == ""
        c.run(f"apt-get install -y --no-install-recommends {container.TAKEOVER_DEBS}/fingerd_*.deb",
              timeout=120)
        assert [e for e in fingerd_entries(c) if re.match(r"finger\s", e)], fingerd_entries(c)
        wait_for(lambda: port_79_owner(c) == "inetd", "inetd to listen on port 79 again")
        assert "Login: root" in finger(c, "root@localhost")
