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
from fingerd.backends import build_chain
from fingerd.config import Config, load

SHIPPED_CONFIG = REPO / "debian" / "fingerd.toml"
SERVICE = REPO / "systemd" / "fingerd@.service"
SOCKET = REPO / "systemd" / "fingerd.socket"
SERVER_SERVICE = REPO / "systemd" / "fingerd-server.service"
SERVER_SOCKET = REPO / "systemd" / "fingerd-server.socket"
WEB_SERVICE = REPO / "systemd" / "fingerd-web.service"
WEB_SOCKET = REPO / "systemd" / "fingerd-web.socket"
NETWORK_DROPIN = REPO / "systemd" / "network.conf"
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
    missing = server_keys() - set(table["server"])
    assert not missing, f"not in {SHIPPED_CONFIG.name}: {missing}"


def server_keys() -> set[str]:
    """Every [server] key the code reads (what ServerConfig asks its table for)."""
    from fingerd.config import Options, ServerConfig

    options = Options({}, "fingerd.toml", "server")
    ServerConfig(options)
    return set(options._asked)


def test_every_server_option_is_documented() -> None:
    """Each [server] key the code reads has a row in the README's [server] table and an entry
    in fingerd.toml(5): the documents must not fall behind the code."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### `[server]`"):]
    table = table[:table.index("\n### ", 1)]
    manual = (REPO / "man" / "fingerd.toml.5").read_text().replace("\\_", "_")
    for key in sorted(server_keys()):
        assert f"| `{key}` |" in table, f"README.md [server] table: {key}"
        assert key in manual, f"fingerd.toml.5: {key}"


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
def exposure(unit: Path, tmp_path: Path, *dropins: Path) -> float:
    """`systemd-analyze security --offline=true` of ``unit`` with ``dropins`` applied (a
    drop-in's lines continue the unit's sections, as if appended to it)."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze not installed (Debian package systemd)")
    assert analyze is not None
    merged = tmp_path / unit.name
    merged.write_text("\n".join(p.read_text() for p in (unit, *dropins)))
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(merged)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    return float(match.group(1))


@pytest.mark.root
@pytest.mark.parametrize("service", [SERVICE, SERVER_SERVICE, WEB_SERVICE],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("network", [False, True], ids=["no network", "network.conf"])
def test_service_security_exposure(service: Path, network: bool, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the per-connection service and the
    long-running ones (finger, the web view) at most 1.5, as shipped (no network) and with the
    network drop-in that the http backend and forwarding need; the figures the README and the
    units quote."""
    quoted = {(SERVICE, False): 1.3, (SERVICE, True): 1.5, (SERVER_SERVICE, False): 0.4,
              (SERVER_SERVICE, True): 1.3, (WEB_SERVICE, False): 0.4, (WEB_SERVICE, True): 1.3}
    score = exposure(service, tmp_path, *([NETWORK_DROPIN] if network else []))
    assert score <= MAX_EXPOSURE
    assert score == quoted[service, network]


def test_network_dropin_gives_the_network_and_only_that_back() -> None:
    """The units take the network away (a namespace of their own, AF_UNIX only, no IP); the
    drop-in resets exactly those three settings to allow outbound TCP, and what else it sets
    only adds protection (mount options the per-connection unit leaves out)."""
    for unit in (SERVICE, SERVER_SERVICE, WEB_SERVICE):
        lines = settings(unit)
        assert ("PrivateNetwork", "yes") in lines, unit
        assert ("RestrictAddressFamilies", "AF_UNIX") in lines, unit
        assert ("IPAddressDeny", "any") in lines, unit
    dropin = settings(NETWORK_DROPIN)
    assert dropin[:4] == [("PrivateNetwork", "no"), ("RestrictAddressFamilies", ""),
                          ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
                          ("IPAddressDeny", "")]
    assert all(value == "yes" and key.startswith(("Private", "Protect"))
               for key, value in dropin[4:]), dropin
    assert re.search(r"^\[Service\]$", NETWORK_DROPIN.read_text(), flags=re.MULTILINE)


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


# root: systemd-analyze starts a test-mode manager that creates /run/systemd/ when it is missing
# (a build chroot), and only root may; its --root= does not move that directory, and --user
# scores the unit differently (KeyringMode=). A user namespace would do, but not in a chroot.
def test_server_service_is_sandboxed_at_least_like_the_per_connection_one() -> None:
    """Every sandbox line of fingerd@.service is in fingerd-server.service with the same value:
    the long-running server gives up nothing. It adds exactly the lines that fingerd@.service
    leaves out for speed, each named in fingerd@.service's comment with the reason."""
    per_connection, server = sandbox(SERVICE), sandbox(SERVER_SERVICE)
    assert per_connection <= server
    left_out = {key for key, _ in server - per_connection}
    assert left_out == {"PrivateDevices", "ProtectControlGroups", "ProtectHostname",
                        "ProtectKernelLogs", "ProtectKernelModules", "ProtectKernelTunables"}
    comment = SERVICE.read_text()
    for key in left_out:
        assert re.search(rf"^#\s+{key}=\s+\S", comment, flags=re.MULTILINE), key


def test_package_installs_every_unit() -> None:
    """debian/install ships each unit in systemd/ into /lib/systemd/system, and the network
    drop-in into /usr/share/fingerd, where fingerd check's command links it from (not
    /usr/share/doc, which minimal systems may leave out: it must work, not only be read)."""
    lines = [line.split() for line in (REPO / "debian" / "install").read_text().splitlines()
             if line.split()]
    installed = {src for src, dst in lines if dst == "lib/systemd/system/"}
    units = {f"systemd/{p.name}" for p in (REPO / "systemd").iterdir()
             if p.suffix in (".socket", ".service")}
    assert installed == units
    assert ["systemd/network.conf", "usr/share/fingerd/"] in lines
    from fingerd.sandbox import NETWORK_DROPIN as installed_path

    assert installed_path == "/usr/share/fingerd/network.conf"
