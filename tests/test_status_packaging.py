"""The status service's units and packaging, checked without root or a container (the booted
test is tests/test_e2e_status.py): the socket the CLI and the backend expect, the sandbox
(at least fingerd@.service's, never PrivateUsers=), installed but not enabled, stopped on
removal, its state removed on purge."""

from __future__ import annotations

import re
import shutil
import subprocess

from conftest import REPO, require
from test_packaging import MAX_EXPOSURE, SERVICE, sandbox, settings

from fingerd.status_protocol import DEFAULT_SOCKET
from fingerd.status_server import DEFAULT_STATE_DIR

STATUS_SOCKET = REPO / "systemd" / "fingerd-status.socket"
STATUS_SERVICE = REPO / "systemd" / "fingerd-status.service"
# Where fingerd-status.service is stricter than fingerd@.service, which reads homes (local
# backend) and may reach the network (http backend).
TIGHTER = {("ProtectHome", "yes"), ("RestrictAddressFamilies", "AF_UNIX"),
           ("PrivateNetwork", "yes"), ("IPAddressDeny", "any")}


def test_status_socket_is_where_the_cli_and_the_backend_look() -> None:
    """fingerd-status.socket listens on the path `fingerd status` and the status backend
    use by default, mode 0666 (the service checks who connected), hands the listening socket
    to one service (Accept=no), removes it when stopped, and can be enabled."""
    sock = dict(settings(STATUS_SOCKET))
    assert sock["ListenStream"] == DEFAULT_SOCKET
    assert sock["SocketMode"] == "0666"
    assert sock["Accept"] == "no"
    assert sock["RemoveOnStop"] == "yes"
    assert "[Install]" in STATUS_SOCKET.read_text()


def test_status_service_settings() -> None:
    """fingerd-status.service runs `fingerd status-server` as a transient user, reports
    readiness, keeps its data in StateDirectory=fingerd-status (where the server looks by
    default), logs to the journal, is started by its socket only, and is not in a user
    namespace of its own (SO_PEERCRED would then see every other user as nobody)."""
    service = settings(STATUS_SERVICE)
    values = dict(service)
    assert values["ExecStart"] == "/usr/bin/fingerd status-server"
    assert values["Type"] == "notify"
    assert values["DynamicUser"] == "yes"
    assert values["StateDirectory"] == "fingerd-status"
    assert "/var/lib/" + values["StateDirectory"] == DEFAULT_STATE_DIR
    assert values["StandardError"] == "journal"
    assert ("Requires", "fingerd-status.socket") in service
    assert "PrivateUsers" not in values
    assert "RuntimeDirectory" not in values  # it would take /run/fingerd, and the socket, along
    assert "[Install]" not in STATUS_SERVICE.read_text()


def test_status_service_is_sandboxed_at_least_like_the_per_connection_one() -> None:
    """Every sandbox line of fingerd@.service is in fingerd-status.service, with the same value
    or a stricter one (no network, no homes)."""
    status = sandbox(STATUS_SERVICE)
    keys = {key for key, _ in status}
    for key, value in sandbox(SERVICE):
        assert (key, value) in status or (key in keys and any(
            (key, v) in TIGHTER for k, v in status if k == key)), (key, value)
    assert status >= TIGHTER


def test_status_service_security_exposure() -> None:
    """`systemd-analyze security --offline=true` rates fingerd-status.service 0.4, the figure
    the README quotes (the limit is 1.5)."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze not installed (Debian package systemd)")
    assert analyze is not None
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                          str(STATUS_SERVICE)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out
    assert match.group(1) == "0.4", out
    # The README quotes the figure.
    assert f"fingerd-status.service: {match.group(1)}" in (REPO / "README.md").read_text()


def test_status_units_are_installed_not_enabled_stopped_on_removal_purged() -> None:
    """debian/install ships both units; debian/rules installs them without enabling or
    starting them (restarted on upgrade if running); debian/prerm stops them on removal;
    debian/postrm removes the state directory and its symlink on purge."""
    install = (REPO / "debian" / "install").read_text()
    for unit in ("fingerd-status.socket", "fingerd-status.service"):
        assert f"systemd/{unit} lib/systemd/system/" in install
    rules = (REPO / "debian" / "rules").read_text()
    assert re.search(r"dh_installsystemd --no-enable --no-start --restart-after-upgrade \\\n"
                     r"\s+fingerd-status\.socket fingerd-status\.service\n", rules)
    prerm = (REPO / "debian" / "prerm").read_text()
    stop = prerm[prerm.index("deb-systemd-invoke stop"):prerm.index(">/dev/null")]
    assert "'fingerd-status.service'" in stop and "'fingerd-status.socket'" in stop
    postrm = (REPO / "debian" / "postrm").read_text()
    purge = postrm[postrm.index('if [ "$1" = "purge" ]'):]
    assert "rm -rf /var/lib/private/fingerd-status\n" in purge
    assert "rm -f /var/lib/fingerd-status\n" in purge
