"""fingerd-irc.service and the [irc] section of the shipped configuration, without a container
(tests/test_e2e_irc.py boots one)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from conftest import REPO, require

from fingerd.config import Config
from fingerd.irc.config import IrcConfig

UNIT = REPO / "systemd" / "fingerd-irc.service"
SERVER_UNIT = REPO / "systemd" / "fingerd-server.service"
MAX_EXPOSURE = 1.5


def settings(unit: Path) -> list[tuple[str, str]]:
    return re.findall(r"^(\w+)=(.*)$", unit.read_text(), flags=re.MULTILINE)


def test_irc_unit_exposure() -> None:
    """`systemd-analyze security --offline=true` rates fingerd-irc.service at most 1.5."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze not installed (Debian package systemd)")
    assert analyze is not None
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out


def test_irc_unit_is_sandboxed_like_the_server_with_the_network() -> None:
    """The sandbox lines (DynamicUser= to UMask=) are fingerd-server.service's with the
    network drop-in applied, value for value: the bot connects out, and gives up nothing
    else the server keeps."""
    def sandbox(unit: Path) -> dict[str, str]:
        lines = settings(unit)
        start = lines.index(("DynamicUser", "yes"))
        end = next(i for i, (key, _) in enumerate(lines) if key == "UMask")
        return dict(lines[start:end + 1])

    expected = sandbox(SERVER_UNIT)
    # what network.conf changes: the host's network, IP sockets, no IP filter
    del expected["PrivateNetwork"], expected["IPAddressDeny"]
    expected["RestrictAddressFamilies"] = "AF_UNIX AF_INET AF_INET6"
    assert sandbox(UNIT) == expected


def test_irc_unit_settings() -> None:
    """Type=notify, reload on SIGHUP, restart after a crash with a pause, stderr to the
    journal, enable-able (WantedBy=multi-user.target), LoadCredential= shown commented."""
    unit = dict(settings(UNIT))
    assert unit["Type"] == "notify"
    assert unit["ExecStart"] == "/usr/bin/fingerd irc"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the last ExecReload= line
    assert unit["Restart"] == "on-failure"
    assert unit["RestartSec"] == "30s"
    assert unit["StandardError"] == "journal"
    assert unit["WantedBy"] == "multi-user.target"
    assert "#LoadCredential=irc-password:" in UNIT.read_text()


def test_shipped_config_documents_every_irc_key(tmp_path: Path) -> None:
    """The [irc] section of /etc/fingerd/fingerd.toml, switched on, is valid and shows every
    key the bot reads (a plain `password` key does not exist: secrets are not kept there)."""
    text = (REPO / "debian" / "fingerd.toml").read_text()
    section = text[text.index("#[irc]"):]
    path = tmp_path / "fingerd.toml"
    path.write_text(re.sub(r'^#(?=[\[A-Za-z"])', "", section, flags=re.MULTILINE))
    table = tomllib.loads(path.read_text())
    IrcConfig(Config(str(path), table).frontends["irc"])
    assert set(table["irc"]) == {
        "server", "port", "tls", "ca_file", "nick", "alt_nicks", "user", "realname",
        "channels", "prefix", "channel_lines", "send_burst", "send_interval",
        "reconnect_max_delay", "password_credential", "sasl_username"}
    assert "password_file" in section
