"""The shipped configuration file and systemd units, checked without root or a container.

The end-to-end test (test_systemd_e2e.py) runs them for real; these catch drift early: an
option added to the code but not to /etc/fingerd/fingerd.toml, a sandbox line dropped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, require

import fingerd
from fingerd.chain import build_chain
from fingerd.config import Config, load

SHIPPED_CONFIG = REPO / "debian" / "fingerd.toml"
SERVICE = REPO / "systemd" / "fingerd@.service"
SOCKET = REPO / "systemd" / "fingerd.socket"
SERVER_SERVICE = REPO / "systemd" / "fingerd-server.service"
SERVER_SOCKET = REPO / "systemd" / "fingerd-server.socket"
WEB_SERVICE = REPO / "systemd" / "fingerd-web.service"
WEB_SOCKET = REPO / "systemd" / "fingerd-web.socket"
# The bar for `systemd-analyze security --offline=true` ("OK" is below 2).
MAX_EXPOSURE = 1.5


def uncommented(text: str) -> str:
    """The shipped file with its commented-out settings switched on (prose stays comment)."""
    return re.sub(r'^#(?=[\[A-Za-z"])', "", text, flags=re.MULTILINE)


def test_shipped_config_discloses_nothing() -> None:
    """As installed, /etc/fingerd/fingerd.toml sets nothing: no backend, no listing, no
    forwarding, so a fresh install answers every user as unknown."""
    config = load(str(SHIPPED_CONFIG))
    assert config.backends == []
    assert not config.server.list_users
    assert not config.server.forwarding


def test_shipped_config_documents_every_option(tmp_path: Path) -> None:
    """Switching on every commented-out setting gives a valid config with all five backends,
    and each [server] option the code knows appears in the file (the file is how admins
    learn the options, so it must not fall behind the code)."""
    path = tmp_path / "fingerd.toml"
    path.write_text(uncommented(SHIPPED_CONFIG.read_text()))
    table = tomllib.loads(path.read_text())
    config = Config(str(path), table)
    assert [b.type for b in config.backends] == ["static", "file", "status", "local", "http"]
    build_chain(config)  # every backend accepts every option shown for it
    missing = {"list_users", "forwarding", "read_timeout", "backend_timeout", "no_such_user",
               "no_information", "conceal_unknown", "max_answer_bytes", "max_connections",
               "max_connections_per_source", "output_charset"} - set(table["server"])
    assert not missing, f"not in {SHIPPED_CONFIG.name}: {missing}"


def changelog_version() -> str:
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(r"fingerd \((\S+)\) ", first)
    assert match, first
    return match.group(1)


def test_package_version_is_epoch_1_and_above_debians_fingerd() -> None:
    """The package version is 1:<fingerd's own version>. The epoch makes it sort above Debian's
    fingerd (bsd-finger, 0.17-17 in bookworm), the package of the same name it replaces, so
    installing it over Debian's is an upgrade and the archive never "upgrades" it back."""
    version = changelog_version()
    assert version == f"1:{fingerd.__version__}"
    dpkg = shutil.which("dpkg")
    require(dpkg is not None, "dpkg not installed")
    assert dpkg is not None
    subprocess.run([dpkg, "--compare-versions", version, "gt", "0.17-17"], check=True,
                   timeout=30)


def test_deb_file_name_leaves_out_the_epoch() -> None:
    """mk/deb.mk names the .deb and .changes the way dpkg-buildpackage writes them, without the
    epoch: dist/fingerd_<version>_all.deb, not fingerd_1:<version>_all.deb."""
    make = shutil.which("make")
    require(make is not None, "make not installed")
    assert make is not None
    # Not the flags of a make we may run under (the package build's debian/rules): they would
    # add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(
        [make, "-s", "--no-print-directory", "-f", "mk/deb.mk", "--eval",
         "print-names: ; @echo $(DEBPKG_DEB) $(DEBPKG_CHANGES)", "print-names"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        check=True).stdout.split()
    upstream = changelog_version().split(":", 1)[1]
    assert out[0] == f"dist/fingerd_{upstream}_all.deb"
    assert re.fullmatch(rf"dist/fingerd_{re.escape(upstream)}_[a-z0-9]+\.changes", out[1])


# root: systemd-analyze starts a test-mode manager that creates /run/systemd/ when it is missing
# (a build chroot), and only root may; its --root= does not move that directory, and --user
# scores the unit differently (KeyringMode=). A user namespace would do, but not in a chroot.
@pytest.mark.root
@pytest.mark.parametrize("service", [SERVICE, SERVER_SERVICE, WEB_SERVICE], ids=lambda p: p.name)
def test_service_security_exposure(service: Path) -> None:
    """`systemd-analyze security --offline=true systemd/<unit>` rates the sandbox of the
    per-connection service and of the long-running ones (finger, the web view) at most 1.5, the
    figure the README quotes."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze not installed (Debian package systemd)")
    assert analyze is not None
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(service)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out


@pytest.mark.parametrize("unit", [SOCKET, SERVICE], ids=lambda p: p.name)
def test_unit_has_the_settings_the_readme_relies_on(unit: Path) -> None:
    """The lines the README explains are there: flood protection on the socket, the journal
    for stderr, a runtime cap and a transient user on the service, no [Install] on the
    template."""
    text = unit.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE))
    if unit == SOCKET:
        assert settings["Accept"] == "yes"
        assert settings["TriggerLimitIntervalSec"] == "0"
        assert int(settings["MaxConnections"]) > int(settings["MaxConnectionsPerSource"]) > 0
        assert "[Install]" in text
    else:
        assert settings["StandardInput"] == "socket"
        assert settings["StandardError"] == "journal"
        assert settings["DynamicUser"] == "yes"
        assert settings["RuntimeMaxSec"]
        assert settings["CacheDirectory"] == "fingerd"
        assert "[Install]" not in text


def settings(unit: Path) -> list[tuple[str, str]]:
    """Every ``Key=value`` line of a unit, in order, repeated keys included."""
    return re.findall(r"^(\w+)=(.*)$", unit.read_text(), flags=re.MULTILINE)


def sandbox(unit: Path) -> set[tuple[str, str]]:
    """The sandbox settings: everything from ``DynamicUser=`` to the end of the unit."""
    lines = settings(unit)
    return set(lines[lines.index(("DynamicUser", "yes")):])


def test_server_units_have_the_settings_the_readme_relies_on() -> None:
    """fingerd-server.socket hands its listening socket to one process (Accept=no) on port 79
    and can be enabled; starting it stops fingerd.socket, ordered so that the port is free
    before it binds. fingerd-server.service is started by its socket only (no [Install]),
    reports readiness (Type=notify), reloads on SIGHUP, logs to the journal, and conflicts
    with fingerd.socket too."""
    socket_text = SERVER_SOCKET.read_text()
    sock = settings(SERVER_SOCKET)
    assert ("Accept", "no") in sock
    assert ("ListenStream", "79") in sock
    assert ("Conflicts", "fingerd.socket") in sock
    assert ("After", "fingerd.socket") in sock
    assert "[Install]" in socket_text
    service = settings(SERVER_SERVICE)
    assert ("Type", "notify") in service
    assert ("ExecStart", "/usr/bin/fingerd serve") in service
    assert ("ExecReload", "/bin/kill -HUP $MAINPID") in service
    assert ("StandardError", "journal") in service
    assert ("Requires", "fingerd-server.socket") in service
    assert ("Conflicts", "fingerd.socket") in service
    assert ("After", "fingerd.socket") in service
    assert "[Install]" not in SERVER_SERVICE.read_text()


@pytest.mark.parametrize("service", [SERVER_SERVICE, WEB_SERVICE], ids=lambda p: p.name)
def test_long_running_services_are_sandboxed_like_the_per_connection_one(service: Path) -> None:
    """Every sandbox line of fingerd@.service is in fingerd-server.service and
    fingerd-web.service with the same value, and the other way round: the long-running servers
    give up nothing, they pay once."""
    assert sandbox(service) == sandbox(SERVICE)


def test_web_units_have_the_settings_the_readme_relies_on() -> None:
    """fingerd-web.socket listens on loopback only, 127.0.0.1:8079 and [::1]:8079, and hands
    its sockets to one process (Accept=no); it can be enabled. fingerd-web.service is started
    by its socket only, runs `fingerd web`, reports readiness, reloads on SIGHUP and logs to
    the journal."""
    sock = settings(WEB_SOCKET)
    assert [value for key, value in sock if key == "ListenStream"] == ["127.0.0.1:8079",
                                                                      "[::1]:8079"]
    assert ("Accept", "no") in sock
    assert "[Install]" in WEB_SOCKET.read_text()
    service = settings(WEB_SERVICE)
    for line in (("Type", "notify"), ("ExecStart", "/usr/bin/fingerd web"),
                 ("ExecReload", "/bin/kill -HUP $MAINPID"), ("StandardError", "journal"),
                 ("Requires", "fingerd-web.socket"), ("After", "fingerd-web.socket")):
        assert line in service, line
    assert "[Install]" not in WEB_SERVICE.read_text()


def test_package_depends_on_h11() -> None:
    """`fingerd web` imports h11: the package depends on python3-h11, and the build, whose
    tests start `fingerd web`, needs it unless tests are off."""
    control = (REPO / "debian" / "control").read_text()
    source, binary = control.split("\nPackage: fingerd\n", 1)
    assert " python3-h11,\n" in binary
    assert " python3-h11 <!nocheck>,\n" in source


def test_package_installs_every_unit() -> None:
    """debian/install ships each unit in systemd/ (the drop-in no-network.conf is an example,
    shipped by debian/examples) into /lib/systemd/system."""
    installed = {line.split()[0] for line in
                 (REPO / "debian" / "install").read_text().splitlines()
                 if line.split() and line.split()[1] == "lib/systemd/system/"}
    units = {f"systemd/{p.name}" for p in (REPO / "systemd").iterdir()
             if p.suffix in (".socket", ".service")}
    assert installed == units
