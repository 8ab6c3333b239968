"""fingerd/sandbox.py: which configurations need the network, and how a mismatch with the
unit's sandbox is reported (by `fingerd check` and by the handler).

The e2e test (test_systemd_e2e.py) runs both against the packaged units in a booted systemd;
here the handler's own observation runs for real in a private network namespace, and
`fingerd check`'s reading of systemd is fed the text `systemctl show` prints (systemd does not
run on the test host).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import FINGERD, IS_ROOT, REPO, STATIC, env, require

from fingerd import sandbox
from fingerd.backend import Backend
from fingerd.backends import build_chain
from fingerd.config import Config, Options, load
from fingerd.protocol import Query

HTTP = """
[[backend]]
type = "http"
name = "web"
url = "http://127.0.0.1:9/{user}"
"""
SWITCH = ("mkdir -p /etc/systemd/system/fingerd@.service.d && ln -sf "
          "/usr/share/fingerd/network.conf /etc/systemd/system/fingerd@.service.d/network.conf"
          " && systemctl daemon-reload")


def needs(make_config: Callable[[str], Path], text: str) -> list[str]:
    config = load(str(make_config(text)))
    return sandbox.network_needs(config, build_chain(config))


def test_configs_without_http_or_forwarding_need_no_network(
        make_config: Callable[[str], Path]) -> None:
    """The shipped configuration (no backend) and static, file and local backends need no
    network; list_users does not either."""
    assert needs(make_config, "") == []
    assert needs(make_config, STATIC + '\n[[backend]]\ntype = "file"\npath = "/x"\n'
                 '\n[[backend]]\ntype = "local"\n\n[server]\nlist_users = true\n') == []


def test_http_backends_and_forwarding_need_the_network(
        make_config: Callable[[str], Path]) -> None:
    """Each http backend is named, by its name and type, and so is forwarding."""
    assert needs(make_config, STATIC + HTTP) == ["backend 'web' (type http)"]
    assert needs(make_config, "[server]\nforwarding = true\n" + HTTP) == [
        "backend 'web' (type http)", "[server] forwarding = true"]


class Networked(Backend):
    """A third-party backend that talks to a directory server."""

    needs_network = True

    def __init__(self, options: Options) -> None:
        pass

    def lookup(self, query: Query) -> str | None:
        return None


def test_a_backend_declares_that_it_needs_the_network() -> None:
    """A backend class says so with needs_network = True (fingerd/backend.py), and is named."""
    config = Config("/etc/fingerd/fingerd.toml",
                    {"backend": [{"type": "ldap", "name": "directory"}]})
    assert sandbox.network_needs(config, [("directory", Networked(Options({}, "", "")))]) == [
        "backend 'directory' (type ldap)"]


# -- what systemd says, as `systemctl show` prints it ---------------------------------------------

def show_block(unit: str, **props: str) -> str:
    defaults = {"IPAddressAllow": "", "IPAddressDeny": "", "PrivateNetwork": "no",
                "RestrictAddressFamilies": "~", "LoadState": "loaded",
                "ActiveState": "inactive", "UnitFileState": "static", "NeedDaemonReload": "no"}
    defaults.update(props)
    return "".join(f"{k}={v}\n" for k, v in defaults.items()) + f"Id={unit}\n"


NO_NETWORK = {"PrivateNetwork": "yes", "RestrictAddressFamilies": "AF_UNIX",
              "IPAddressDeny": "0.0.0.0/0 ::/0"}
NETWORK = {"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}


def systemd(per_connection: dict[str, str], server: dict[str, str], *,
            socket: str = "fingerd.socket") -> Callable[[Sequence[str]], str]:
    """A `show` for sandbox.check(): what systemctl prints for the units, with ``socket``
    enabled and active and the others off (the web view's unit has the server's settings)."""
    def show(units: Sequence[str]) -> str:
        assert list(units) == ["fingerd.socket", "fingerd-server.socket", "fingerd-web.socket",
                               "fingerd@check.service", "fingerd-server.service",
                               "fingerd-web.service"]
        on = {"ActiveState": "active", "UnitFileState": "enabled"}
        off = {"UnitFileState": "disabled"}
        return "\n".join([
            show_block("fingerd.socket", **(on if socket == "fingerd.socket" else off)),
            show_block("fingerd-server.socket",
                       **(on if socket == "fingerd-server.socket" else off)),
            show_block("fingerd-web.socket", **(on if socket == "fingerd-web.socket" else off)),
            show_block("fingerd@check.service", **per_connection),
            show_block("fingerd-server.service", **server),
            show_block("fingerd-web.service", **server)])
    return show


def test_blocking_settings_read_systemctl_show() -> None:
    """Each of PrivateNetwork=yes, an address family list without AF_INET (allow or deny
    list) and IPAddressDeny=any without an allow list takes the network away."""
    units = sandbox.parse_show(systemd(NO_NETWORK, NETWORK)(
        ["fingerd.socket", "fingerd-server.socket", "fingerd-web.socket",
         "fingerd@check.service", "fingerd-server.service", "fingerd-web.service"]))
    assert sandbox.blocking_settings(units["fingerd@check.service"]) == [
        "PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX", "IPAddressDeny=0.0.0.0/0 ::/0"]
    assert sandbox.blocking_settings(units["fingerd-server.service"]) == []
    for families, blocked in (("~", False), ("", False), ("~AF_PACKET", False),
                              ("~AF_INET AF_INET6", True), ("AF_UNIX AF_INET6", True)):
        assert bool(sandbox.blocking_settings({"RestrictAddressFamilies": families})) \
            == blocked, families
    assert sandbox.blocking_settings({"IPAddressDeny": "0.0.0.0/0 ::/0",
                                      "IPAddressAllow": "192.0.2.0/24"}) == []
    assert sandbox.blocking_settings({"IPAddressDeny": "0.0.0.0/0 ::/0",
                                      "IPAddressAllow": "127.0.0.0/8 ::1/128"}) != []


def run_check(make_config: Callable[[str], Path], text: str,
              show: Callable[[Sequence[str]], str]) -> tuple[bool, list[str], list[str]]:
    config = load(str(make_config(text)))
    said: list[str] = []
    complaints: list[str] = []
    ok = sandbox.check(config, build_chain(config), said.append, complaints.append, show)
    return ok, said, complaints


def test_check_reports_a_config_that_needs_network_the_unit_does_not_allow(
        make_config: Callable[[str], Path]) -> None:
    """An http backend under the no-network fingerd@.service: check fails, names the backend,
    the settings in the way and the one command that allows the network."""
    ok, said, complaints = run_check(make_config, HTTP, systemd(NO_NETWORK, NO_NETWORK))
    assert not ok
    assert said == []
    (complaint,) = complaints
    assert "backend 'web' (type http)" in complaint
    assert "fingerd@.service allows none (PrivateNetwork=yes" in complaint
    assert complaint.endswith("\n  " + SWITCH)


def test_check_names_the_server_when_it_serves(make_config: Callable[[str], Path]) -> None:
    """With fingerd-server.socket enabled, the unit to fix is fingerd-server.service, and its
    command restarts a running server, which keeps the sandbox it started with."""
    ok, _, complaints = run_check(make_config, "[server]\nforwarding = true\n",
                                  systemd(NETWORK, NO_NETWORK, socket="fingerd-server.socket"))
    assert not ok
    assert "fingerd-server.service allows none" in complaints[0]
    assert complaints[0].endswith(
        "ln -sf /usr/share/fingerd/network.conf "
        "/etc/systemd/system/fingerd-server.service.d/network.conf && systemctl daemon-reload"
        " && systemctl try-restart fingerd-server.service")


def test_check_names_the_web_view_when_it_serves(make_config: Callable[[str], Path]) -> None:
    """With fingerd-web.socket enabled, fingerd-web.service is a unit to fix, and its command
    restarts the running web view too: like the server, it keeps the sandbox it started with."""
    ok, _, complaints = run_check(make_config, HTTP,
                                  systemd(NETWORK, NO_NETWORK, socket="fingerd-web.socket"))
    assert not ok
    assert "fingerd-web.service allows none" in complaints[0]
    assert complaints[0].endswith(
        "/etc/systemd/system/fingerd-web.service.d/network.conf && systemctl daemon-reload"
        " && systemctl try-restart fingerd-web.service")


def test_check_passes_when_the_unit_allows_what_the_config_needs(
        make_config: Callable[[str], Path]) -> None:
    """No network needed in the no-network unit, or network needed in a unit that allows it:
    check passes and says so; a unit with network the config does not need is pointed out."""
    for text, per_connection, expected in (
            (STATIC, NO_NETWORK, "  network: not needed; fingerd@.service allows none"),
            (HTTP, NETWORK, "  network: needed (backend 'web' (type http)); "
                            "fingerd@.service allows it")):
        ok, said, complaints = run_check(make_config, text, systemd(per_connection, NETWORK))
        assert ok and complaints == [] and said == [expected]
    ok, said, _ = run_check(make_config, STATIC, systemd(NETWORK, NETWORK))
    assert ok
    assert said[0].startswith("  network: not needed; fingerd@.service allows it all the same")


def test_check_asks_for_a_daemon_reload_first(make_config: Callable[[str], Path]) -> None:
    """Edited unit files that systemd has not read yet: what systemctl shows may be stale, so
    check fails and asks for `systemctl daemon-reload`."""
    ok, _, complaints = run_check(make_config, HTTP,
                                  systemd({**NETWORK, "NeedDaemonReload": "yes"}, NETWORK))
    assert not ok
    assert "run `systemctl daemon-reload`" in complaints[0]


def test_check_without_systemd_says_what_it_cannot_tell(
        make_config: Callable[[str], Path]) -> None:
    """Where systemd is not running (this test host), `fingerd check` of an http config says
    that nothing limits the network here, and gives the command for systemd; no network
    complaint (the exit status 3 is the probe's: nothing answers on the URL's port)."""
    require(not os.path.isdir("/run/systemd/system"), "systemd runs here")
    path = make_config(HTTP)
    proc = subprocess.run([*FINGERD, "check", "--config", str(path)], capture_output=True,
                          text=True, env=env(), timeout=30)
    assert proc.returncode == 3, proc.stderr
    assert "WARNING: the configuration needs the network" not in proc.stdout
    assert "cannot connect" in proc.stdout
    assert ("  network: needed (backend 'web' (type http)); systemd is not running, so no "
            "unit limits it here. Under systemd the units allow none until: " + SWITCH) \
        in proc.stdout.splitlines()


# -- the handler's own look ---------------------------------------------------------------------

def handler_over_tcp(config: Path, prefix: Sequence[str] = ()) -> tuple[bytes, str]:
    """One handler with a real TCP connection accepted here as fd 0/1 (as systemd passes
    it), run with ``prefix`` (e.g. unshare: another network namespace)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=20)
        conn, _ = server.accept()
    with client, conn:
        proc = subprocess.Popen([*prefix, *FINGERD, "--config", str(config)], stdin=conn,
                                stdout=conn, stderr=subprocess.PIPE, env=env())
        conn.close()
        client.sendall(b"nobody\r\n")
        answer = client.recv(65536)
        _, stderr = proc.communicate(timeout=30)
    return answer, stderr.decode()


@pytest.mark.netns
def test_handler_in_a_private_network_namespace_logs_the_remedy(
        make_config: Callable[[str], Path]) -> None:
    """Run in a network namespace of its own (as PrivateNetwork=yes does) with the client's
    connection from outside, a handler whose config has an http backend logs one error that
    names the backend, what stops it and the command that allows the network; it still
    answers the client."""
    require(IS_ROOT, "needs root for unshare --net")
    answer, stderr = handler_over_tcp(make_config(HTTP), ["unshare", "--net", "--"])
    assert answer == b"Finger service unavailable\r\n"  # its only backend failed
    (line,) = [line for line in stderr.splitlines() if "needs the network" in line]
    assert "backend 'web' (type http)" in line
    assert "PrivateNetwork=yes" in line
    assert SWITCH in line


def test_handler_with_the_network_logs_nothing_about_it(
        make_config: Callable[[str], Path]) -> None:
    """In the same network namespace as its client, the handler of an http config has the
    network: no sandbox record (the lookup itself fails, to a closed port)."""
    answer, stderr = handler_over_tcp(make_config(HTTP))
    assert answer == b"Finger service unavailable\r\n"  # its only backend failed
    assert "needs the network" not in stderr
    assert "backend web failed" in stderr  # the control: the lookup did run


def test_handler_of_a_config_without_network_imports_no_sandbox_code(
        make_config: Callable[[str], Path]) -> None:
    """The per-connection hot path: a config without http or forwarding does not import
    fingerd.sandbox (python3 -X importtime lists every import)."""
    for text, imported in ((STATIC, False), (HTTP, True)):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fingerd", "--config",
                               str(make_config(text))], input=b"moshez\r\n",
                              capture_output=True, env=env(), timeout=30)
        assert proc.returncode == 0
        assert (b" fingerd.sandbox\n" in proc.stderr) == imported, text


def test_docs_give_the_command_check_prints() -> None:
    """README, fingerd(8) and network.conf itself show the same one line that `fingerd check`
    and the handler print, so an admin may take it from any of them."""
    command = sandbox.switch_command(sandbox.PER_CONNECTION)
    assert command == SWITCH
    assert command in (REPO / "README.md").read_text()
    assert command in (REPO / "systemd" / "network.conf").read_text()
    man = (REPO / "man" / "fingerd.8").read_text().replace("\\-", "-")
    assert command in man
