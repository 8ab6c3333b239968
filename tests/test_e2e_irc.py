"""End to end on a booted systemd: the .deb's fingerd-irc.service against the container's ngircd.

In order, as an admin would: install the package (the bot's unit is there, neither enabled nor
started), set up ngircd (Debian's own unit, TLS with a CA made here, a server password), give
the bot its [irc] table, its CA and the password as a systemd credential (LoadCredential= in a
drop-in), start it, and ask it from a person's client inside the container. Then reload and
stop it, and measure the unit's sandbox.

Needs root, debootstrap and systemd-nspawn; skipped with the reason otherwise, failing in CI.
The .deb is $FINGERD_DEB, or built (see tests/test_systemd_e2e.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from conftest import require
from e2e import journal_records, unit_property, wait_for

pytestmark = pytest.mark.systemd


PERSON = Path(__file__).with_name("irc_person.py")
CONFIG = "/etc/fingerd/fingerd.toml"
PASSWORD = "e2e-s3cret"  # noqa: S105 (a test server's password)
NGIRCD_CONF = f"""\
[Global]
\tName = irc.test
\tInfo = fingerd end-to-end test
\tAdminInfo1 = fingerd tests
\tAdminInfo2 = container
\tAdminEMail = root@localhost
\tListen = 127.0.0.1
\tPorts = 6667
\tPassword = {PASSWORD}
\tPidFile = /run/ngircd/ngircd.pid
[Limits]
\tMaxConnectionsIP = 0
\tMaxNickLength = 30
[Options]
\tPAM = no
\tIdent = no
\tDNS = no
[SSL]
\tCertFile = /etc/ngircd/test-cert.pem
\tKeyFile = /etc/ngircd/test-key.pem
\tPorts = 6697
"""
FINGERD_CONF = """\
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"

[irc]
server = "localhost"
nick = "fingerbot"
channels = ["#finger"]
ca_file = "/etc/fingerd/irc-ca.pem"
password_credential = "irc-password"
reconnect_max_delay = 5
"""
DROPIN = "/etc/systemd/system/fingerd-irc.service.d/credential.conf"


@pytest.fixture(scope="module")
def box() -> Iterator[container.Container]:
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as c:
        c.copy_in(PERSON, "/root/")
        yield c


def ask(box: container.Container, text: str, nick: str = "alice") -> list[str]:
    out = box.run(["python3", "/root/irc_person.py", "ask", "127.0.0.1", "6667", nick,
                   "#finger", text, "fingerbot", PASSWORD], timeout=90).stdout
    lines: list[str] = json.loads(out)
    return lines


def test_installed_not_enabled(box: container.Container, deb: Path) -> None:
    """The package installs fingerd-irc.service, neither enabled nor started (it needs an [irc]
    table first), and the unit loads without a warning."""
    box.copy_in(deb, "/root/")
    box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180)
    assert unit_property(box, "fingerd-irc.service", "UnitFileState") == "disabled"
    assert unit_property(box, "fingerd-irc.service", "ActiveState") == "inactive"
    verify = box.run(["systemd-analyze", "verify", "--man=no", "fingerd-irc.service"])
    assert verify.stderr.strip() == "", verify.stderr


def test_bot_answers_over_tls_with_a_credential(box: container.Container) -> None:
    """With ngircd on TLS (a CA made here) and a server password given to the bot as a systemd
    credential, `systemctl start fingerd-irc.service` returns once the bot is registered and in
    #finger (Type=notify), and `!finger moshez` there is answered in the channel; the query is
    in the journal with the asker, the channel and the outcome, from the unit's transient
    user."""
    box.run("cd /root && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=e2e CA' "
            "-keyout ca.key -out ca.pem 2>/dev/null && openssl req -newkey rsa:2048 -nodes "
            "-subj /CN=localhost -keyout /etc/ngircd/test-key.pem -out srv.csr 2>/dev/null && "
            "printf 'subjectAltName=DNS:localhost\\n' > srv.ext && openssl x509 -req -in srv.csr "
            "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile srv.ext "
            "-out /etc/ngircd/test-cert.pem 2>/dev/null && "
            "chown irc: /etc/ngircd/test-key.pem && cp ca.pem /etc/fingerd/irc-ca.pem")
    box.write_file("/etc/ngircd/ngircd.conf", NGIRCD_CONF, mode=0o640)
    box.run(["chgrp", "irc", "/etc/ngircd/ngircd.conf"])
    box.run(["systemctl", "start", "ngircd.service"])
    box.write_file("/etc/fingerd/irc-password", PASSWORD + "\n", mode=0o600)
    box.write_file(DROPIN, "[Service]\nLoadCredential=irc-password:/etc/fingerd/irc-password\n")
    box.write_file(CONFIG, FINGERD_CONF.replace('server = "localhost"',
                                                'server = "localhost"\nport = 6697'))
    box.run(["fingerd", "check", "--no-probe"])
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "start", "fingerd-irc.service"], timeout=120)
    status = unit_property(box, "fingerd-irc.service", "StatusText")
    assert status.startswith("connected to localhost as fingerbot, in #finger"), status
    assert ask(box, "!finger moshez") == ["Happy and well"]
    records = wait_for(lambda: journal_records(box, "FINGER_FRONTEND=irc"), "the query record")
    record = records[-1]
    assert record["REMOTE_ADDR"].startswith("alice!~alice@")
    assert (record["FINGER_USER"], record["FINGER_OUTCOME"], record["IRC_CHANNEL"]) == (
        "moshez", "answered", "#finger")
    assert record["_SYSTEMD_UNIT"] == "fingerd-irc.service"
    assert 61184 <= int(record["_UID"]) <= 65519  # DynamicUser=
    assert record["_CAP_EFFECTIVE"] == "0"


def test_reload_changes_the_answer_and_stop_quits(box: container.Container) -> None:
    """`systemctl reload` (SIGHUP) applies a changed answer without reconnecting;
    `systemctl stop` ends the bot cleanly (QUIT, exit 0: the unit's result is success)."""
    pid = unit_property(box, "fingerd-irc.service", "MainPID")
    text = box.run(["cat", CONFIG]).stdout.replace("Happy and well", "Reloaded")
    box.write_file(CONFIG, text)
    box.run(["systemctl", "reload", "fingerd-irc.service"])
    deadline = time.monotonic() + 30
    while (answer := ask(box, "!finger moshez", nick="bob")) != ["Reloaded"]:
        assert time.monotonic() < deadline, answer
    assert unit_property(box, "fingerd-irc.service", "MainPID") == pid
    box.run(["systemctl", "stop", "fingerd-irc.service"], timeout=60)
    assert unit_property(box, "fingerd-irc.service", "Result") == "success"
    assert unit_property(box, "fingerd-irc.service", "ExecMainStatus") == "0"


def test_irc_unit_security_exposure(box: container.Container) -> None:
    """`systemd-analyze security fingerd-irc.service` on the booted system, with the drop-in:
    at most 1.5."""
    out = box.run(["systemd-analyze", "security", "--no-pager", "fingerd-irc.service"]).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    print(f"fingerd-irc.service exposure: {match.group(1)}")
    assert float(match.group(1)) <= 1.5, out
