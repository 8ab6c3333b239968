"""A real IRC server for the bot's tests: ngircd (Debian package ngircd), started by the test.

As root, each test gets a network namespace of its own (``unshare --net``, loopback up, as
tests/test_finger_client.py does for port 79): ngircd and the bot run in it through
``nsenter``, and the test's clients connect into it from a thread that joined it (setns(2)),
so the usual ports (6667, 6697 with TLS) are the test's alone, and a system ngircd, which the
package starts on install where it can, is never in the way. Without root they run on
loopback with free ports instead.

ngircd writes a log of its own (``ngircd.log`` in the test's directory), which a failing test
prints.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from conftest import FINGERD, IS_ROOT, env, free_port, require, stop

CLONE_NEWNET = 0x40000000  # sched.h
NGIRCD_CONF = """\
[Global]
\tName = irc.test
\tInfo = fingerd test server
\tAdminInfo1 = fingerd tests
\tAdminInfo2 = loopback
\tAdminEMail = root@localhost
\tListen = 127.0.0.1
\tPorts = {port}
\tMotdPhrase = "fingerd test server"
\tPidFile = {directory}/ngircd.pid
{extra_global}
[Limits]
\t# Every client of the tests comes from 127.0.0.1.
\tMaxConnectionsIP = 0
\tMaxNickLength = 30
[Options]
\tPAM = no
\tIdent = no
\tDNS = no
{ssl}
"""


class Net:
    """Where the test's servers run: a private network namespace (root) or plain loopback."""

    def __init__(self) -> None:
        require(shutil.which("ngircd") is not None, "ngircd is not installed (apt-get install "
                                                    "ngircd; `make deps` does)")
        self.holder: subprocess.Popen[bytes] | None = None
        if IS_ROOT:
            for tool in ("unshare", "nsenter", "ip"):
                require(shutil.which(tool) is not None, f"{tool} is not installed")
            self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "900"])
            deadline = time.monotonic() + 5
            own = os.readlink("/proc/self/ns/net")
            while os.readlink(f"/proc/{self.holder.pid}/ns/net") == own:
                assert time.monotonic() < deadline, "unshare did not make a namespace"
                time.sleep(0.01)
            subprocess.run(self.command(["ip", "link", "set", "lo", "up"]), check=True,
                           timeout=30)

    def port(self, usual: int) -> int:
        """``usual`` in a namespace of our own, else a free port."""
        return usual if self.holder else free_port()

    def command(self, argv: list[str]) -> list[str]:
        if self.holder is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def connect(self, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection to 127.0.0.1:port where the servers are."""
        if self.holder is None:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        result: dict[str, object] = {}

        def work() -> None:  # setns(2) changes this thread's namespace only
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)  # type: ignore[union-attr]
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result["sock"] = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            except OSError as e:
                result["error"] = e

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout + 5)
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        sock = result["sock"]
        assert isinstance(sock, socket.socket)
        return sock

    def wait_listening(self, port: int, what: str, log: Path, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect(port, timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} is not listening on {port}:\n"
                                         f"{log.read_text(errors='replace')[-3000:]}") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self.holder is not None:
            stop(self.holder)


class Ngircd:
    """ngircd with a config written into ``directory``; plain ``port``, and ``tls_port`` when
    given a certificate and key."""

    def __init__(self, net: Net, directory: Path, *, cert: Path | None = None,
                 key: Path | None = None, password: str = "") -> None:
        self.net, self.directory = net, directory
        self.port = net.port(6667)
        self.tls_port = net.port(6697) if cert else 0
        self.conf = directory / "ngircd.conf"
        self.log = directory / "ngircd.log"
        extra = []
        if IS_ROOT:  # it switches to this user once the ports are bound
            extra += ["\tServerUID = nobody", "\tServerGID = nogroup"]
        if password:
            extra.append(f"\tPassword = {password}")
        ssl = (f"[SSL]\n\tCertFile = {cert}\n\tKeyFile = {key}\n\tPorts = {self.tls_port}\n"
               if cert else "")
        self.conf.write_text(NGIRCD_CONF.format(port=self.port, directory=directory,
                                                extra_global="\n".join(extra), ssl=ssl))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.net.command(["ngircd", "--nodaemon", "--config", str(self.conf)]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.net.wait_listening(self.port, "ngircd", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class Bot:
    """``fingerd irc`` with a config; its log lines (stderr) go to ``log``."""

    def __init__(self, net: Net, config: Path, log: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.log = log
        user = ["--user", "nobody"] if IS_ROOT else []
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                net.command([*FINGERD, "irc", "--config", str(config), *user]),
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                env=env(**(extra_env or {})))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        """Wait until ``needle`` is in the log; return the log."""
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the bot's log:\n{text[-3000:]}")
            if self.proc.poll() is not None:
                raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.05)
        return text

    def stop(self) -> int:
        stop(self.proc)
        return self.proc.returncode


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a server certificate from it for localhost and 127.0.0.1 (``good``), one
    from it for another name (``other_name``), and one from another CA (``unknown_ca``)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60,
                       cwd=directory)

    out: dict[str, Path] = {}
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=fingerd test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    for name, ca, san in (("good", "ca", "DNS:localhost,IP:127.0.0.1"),
                          ("other_name", "ca", "DNS:irc.example.org"),
                          ("unknown_ca", "rogue-ca", "DNS:localhost,IP:127.0.0.1")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")
        out[name] = directory / f"{name}.pem"
        out[f"{name}_key"] = directory / f"{name}.key"
    out["ca"] = directory / "ca.pem"
    for path in directory.iterdir():
        path.chmod(0o644)  # ngircd reads them as nobody; test keys only
    return out
