"""The real `finger` client (Debian package finger) against the handler on port 79.

The client only speaks to port 79, so each test gets a private network namespace in which
127.0.0.1:79 and [::1]:79 belong to it alone; systemd-socket-activate starts the handler per
connection there, as fingerd.socket does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FINGERD, IS_ROOT, STATIC, env, require, stop

pytestmark = pytest.mark.netns


class Namespace:
    """A network namespace held open by a sleeping process; commands run in it via nsenter."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])
        self.children: list[subprocess.Popen[bytes]] = []
        try:
            self._set_up()
        except BaseException:
            stop(self.holder)
            raise

    def _set_up(self) -> None:
        deadline = time.monotonic() + 5
        own = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == own:
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.01)
        self.run(["ip", "link", "set", "lo", "up"], check=True)
        # ::1 appears on lo a moment after the link is up; binding [::1]:79 before that fails.
        while b"::1/128" not in self.run(["ip", "-6", "addr", "show", "dev", "lo"]).stdout:
            assert time.monotonic() < deadline + 5, "no ::1 on lo"
            time.sleep(0.01)

    def command(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def run(self, argv: list[str], check: bool = False) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.command(argv), capture_output=True, timeout=30, check=check)

    def start(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.children.append(subprocess.Popen(self.command(argv), env=env(),
                                                  stdout=subprocess.DEVNULL, stderr=stderr))

    def wait_port_79(self) -> None:
        deadline = time.monotonic() + 10
        while self.run(["ss", "-ltnH"]).stdout.count(b":79 ") < 2:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def close(self) -> None:
        for proc in [*self.children, self.holder]:
            stop(proc)


@pytest.fixture
def port79(make_config) -> Iterator[Callable[[str], Namespace]]:
    """A namespace where the handler answers on 127.0.0.1:79 and [::1]:79 with this config."""
    require(IS_ROOT, "needs root for a private network namespace (unshare --net)")
    for tool in ("unshare", "nsenter", "ip", "ss", "finger", "systemd-socket-activate"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    spaces: list[Namespace] = []

    def start(config_text: str) -> Namespace:
        ns = Namespace()
        spaces.append(ns)
        config = make_config(config_text)
        ns.start(["systemd-socket-activate", "--inetd", "-a", "-l", "127.0.0.1:79",
                  "-l", "[::1]:79", *FINGERD, "--config", str(config)],
                 config.with_suffix(".log"))
        ns.wait_port_79()
        return ns

    yield start
    for ns in spaces:
        ns.close()


def finger(ns: Namespace, *args: str) -> str:
    proc = ns.run(["finger", *args])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_finger_user_at_localhost_answers_from_static(port79) -> None:
    """`finger moshez@localhost` prints the static entry."""
    ns = port79(STATIC)
    assert finger(ns, "moshez@localhost") == "Happy and well\n"
    assert finger(ns, "moshez@127.0.0.1") == "Happy and well\n"


def test_finger_over_ipv6(port79) -> None:
    """`finger moshez@::1` reaches the IPv6 listener."""
    ns = port79(STATIC)
    assert finger(ns, "moshez@::1") == "Happy and well\n"


def test_finger_long_form_sends_w_and_is_answered(port79) -> None:
    """`finger -l` sends `/W moshez`; the handler parses and answers it."""
    ns = port79(STATIC)
    assert finger(ns, "-l", "moshez@localhost") == "Happy and well\n"


def test_finger_unknown_user_and_empty_query(port79) -> None:
    """Unknown users get one short line; `finger @host` gets the RFC's refusal."""
    ns = port79(STATIC)
    assert finger(ns, "ghost@localhost") == "No such user.\n"
    assert finger(ns, "@localhost") == "Finger online user list denied\n"


def test_finger_forwarding_denied_by_default(port79) -> None:
    """`finger moshez@a@b` asks b to forward; refused with the RFC's wording."""
    ns = port79(STATIC)
    assert finger(ns, "moshez@127.0.0.1@localhost") == "Finger forwarding service denied\n"


def test_finger_forwarding_when_enabled(port79) -> None:
    """With forwarding = true, b passes the query on to a and relays its answer."""
    ns = port79("[server]\nforwarding = true\n" + STATIC)
    assert finger(ns, "moshez@127.0.0.1@localhost") == "[127.0.0.1]\nHappy and well\n"
