"""End to end on a booted systemd: running fingerd as a Debian admin does (issue 9).

A container of its own installs the .deb and then, as an admin would: adds a drop-in instead
of editing the conffile, hides the configuration from others by mistake, gives the http
backend its token as a systemd credential, and breaks the configuration of the long-running
server while clients keep connecting. The tests run in the order written.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from e2e import booted, finger_text, journal_records, unit_property, wait_for

pytestmark = pytest.mark.systemd

CONFIG = "/etc/fingerd/fingerd.toml"
DROPINS = "/etc/fingerd/fingerd.d"
STATIC = """\
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
"""
# An HTTP status service in the container: answers "authorised" to the right token only, and
# writes down every Authorization header it is sent.
STATUS_SERVER = """\
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        token = self.headers.get("Authorization", "")
        with open("/root/authorizations", "a") as f:
            f.write(token + "\\n")
        body = b"authorised" if token == "Bearer s3cret" else b"who are you?"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def box(deb: Path) -> Iterator[container.Container]:
    with booted(deb) as c:
        c.write_file(CONFIG, STATIC)
        yield c


def check(box: container.Container, *args: str) -> tuple[int, str]:
    r = box.run(["fingerd", "check", *args], check=False, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_a_dropin_adds_a_backend_and_changes_server(box: container.Container) -> None:
    """A drop-in in /etc/fingerd/fingerd.d/ adds a backend and turns the user list on, without
    editing the conffile (dpkg would ask about it on upgrade); `fingerd check --dump` shows
    the merge."""
    box.write_file(f"{DROPINS}/10-office.toml",
                   '[server]\nlist_users = true\n[[backend]]\ntype = "static"\n'
                   'list = "office  the office"\n[backend.users]\noffice = "Room 101"\n')
    assert "Room 101" in box.run(["finger", "office@localhost"], timeout=30).stdout
    assert "the office" in box.run(["finger", "@localhost"], timeout=30).stdout
    status, out = check(box, "--dump")
    assert status == 0, out
    assert "list_users = true" in out
    assert f"# from {CONFIG}" in out and f"# from {DROPINS}/10-office.toml" in out
    status, out = check(box)
    assert status == 0, out
    assert f"drop-in {DROPINS}/10-office.toml" in out
    assert "(read as nobody, as the service reads it)" in out


def test_check_says_when_the_service_cannot_read_the_config(box: container.Container) -> None:
    """chmod 600 on the config (an admin hiding a token): `fingerd check`, run as root, says
    the service cannot read it, as every query then shows."""
    box.run(["chmod", "600", CONFIG])
    try:
        status, out = check(box)
        assert status == 1
        assert "Permission denied" in out and "the service's user cannot read it" in out
        assert "Finger service unavailable" in finger_text(box, "moshez")
    finally:
        box.run(["chmod", "644", CONFIG])
    assert finger_text(box, "moshez") == "Happy and well\r\n"


def test_a_token_reaches_the_http_server_as_a_credential(box: container.Container) -> None:
    """The http backend's token comes from a file only root can read, given to the unit with
    LoadCredential= in a drop-in: it reaches the HTTP server as a header, and no file under
    /etc that others can read contains it. `fingerd check` finds it the same way."""
    box.write_file("/root/status_server.py", STATUS_SERVER)
    box.run(["systemd-run", "--unit=status-server", "python3", "/root/status_server.py"])
    wait_for(lambda: box.run(["ss", "-Htln", "sport", "= :8080"]).stdout.strip(),
             "the status server to listen")
    box.write_file("/etc/fingerd/secrets/status-token", "s3cret\n", mode=0o600)
    box.write_file(f"{DROPINS}/20-http.toml",
                   '[[backend]]\ntype = "http"\nurl = "http://127.0.0.1:8080/{user}"\n'
                   '[backend.headers]\nAuthorization = "Bearer {credential:status-token}"\n')
    box.write_file("/etc/systemd/system/fingerd@.service.d/token.conf",
                   "[Service]\nLoadCredential=status-token:/etc/fingerd/secrets/status-token\n")
    box.run(["systemctl", "daemon-reload"])
    # Without the network (as shipped) the lookup fails, and `fingerd query` says the same.
    assert finger_text(box, "alice") == "No such user.\r\n"
    query = box.run(["fingerd", "query", "alice"])
    assert query.stdout == "No such user.\r\n" and "without network" in query.stderr
    box.run("mkdir -p /etc/systemd/system/fingerd@.service.d && ln -sf "
            "/usr/share/fingerd/network.conf /etc/systemd/system/fingerd@.service.d/ "
            "&& systemctl daemon-reload")
    assert finger_text(box, "alice") == "authorised\r\n"
    assert "Bearer s3cret" in box.run(["cat", "/root/authorizations"]).stdout
    readable = box.run("find /etc -type f -perm -o=r -exec grep -l s3cret {} +", check=False)
    assert readable.stdout.strip() == "", readable.stdout
    status, out = check(box)
    assert status == 0, out
    assert "backend 3: http (fingerd.backends.http.HttpBackend): ok" in out


def test_check_and_query_as_root_answer_what_a_client_gets(box: container.Container) -> None:
    """`fingerd query` as root answers as the service does (the credential included), the same
    bytes a client gets on port 79."""
    query = box.run(["fingerd", "query", "alice"])
    assert query.stdout == finger_text(box, "alice") == "authorised\r\n"
    assert "as nobody" in query.stderr


# -- the long-running server and a broken configuration -----------------------------------------

class Clients:
    """A client in the container connecting to port 79 again and again while the test works,
    counting how each connection ended."""

    def __init__(self, box: container.Container, seconds: float) -> None:
        self.box, self.seconds = box, seconds
        self.result: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        script = (
            "import json, socket, time\n"
            f"end = time.monotonic() + {self.seconds}\n"
            "seen = {}\n"
            "while time.monotonic() < end:\n"
            "    try:\n"
            "        s = socket.create_connection(('127.0.0.1', 79), timeout=5)\n"
            "        s.sendall(b'moshez\\r\\n'); d = b''\n"
            "        while c := s.recv(4096): d += c\n"
            "        k = d.decode().strip() or 'empty'\n"
            "    except OSError as e:\n"
            "        k = type(e).__name__\n"
            "    seen[k] = seen.get(k, 0) + 1\n"
            "    time.sleep(0.02)\n"
            "print(json.dumps(seen))\n")
        out = self.box.run(["python3", "-c", script], timeout=self.seconds + 60).stdout
        self.result = json.loads(out)

    def join(self) -> dict[str, int]:
        self.thread.join(self.seconds + 90)
        return self.result


def test_switch_to_the_long_running_server(box: container.Container) -> None:
    """As the README says: fingerd-server.socket takes port 79 over. The http backend's
    credential was given to fingerd@.service only: `fingerd check` says that the server now
    serving lacks it (root's check read every unit's credentials, the server would not have
    it). Then the http backend is taken out."""
    box.run(["systemctl", "disable", "--now", "fingerd.socket"])
    box.run(["systemctl", "enable", "--now", "fingerd-server.socket"])
    status, out = check(box)
    assert status == 3, out
    assert "fingerd-server.service is not given the credential(s) status-token" in out
    box.run(["rm", f"{DROPINS}/20-http.toml"])
    assert finger_text(box, "moshez") == "Happy and well\r\n"


def test_check_names_the_irc_password_the_bot_is_not_given(box: container.Container) -> None:
    """The IRC bot's password is a credential too (`[irc] password_credential`): with
    fingerd-irc.service enabled but not given it, `fingerd check` warns and names the unit and
    the credential; given it (the README's `LoadCredential=` drop-in), the warning is gone."""
    box.write_file(f"{DROPINS}/30-irc.toml",
                   '[irc]\nserver = "irc.example.org"\nnick = "fingerbot"\n'
                   'password_credential = "irc-password"\n')
    box.run(["install", "-d", "-m", "0700", "/etc/fingerd/secrets"])
    box.write_file("/etc/fingerd/secrets/irc-password", "sesame\n", mode=0o600)
    box.run(["systemctl", "enable", "fingerd-irc.service"])
    try:
        status, out = check(box)
        assert status == 3, out
        assert "fingerd-irc.service is not given the credential(s) irc-password" in out, out
        box.write_file("/etc/systemd/system/fingerd-irc.service.d/password.conf",
                       "[Service]\nLoadCredential=irc-password:/etc/fingerd/secrets/irc-password\n")
        box.run(["systemctl", "daemon-reload"])
        status, out = check(box)
        assert "is not given the credential" not in out, out
        assert status == 0, out
    finally:
        box.run(["systemctl", "disable", "fingerd-irc.service"])
        box.run(["rm", "-rf", f"{DROPINS}/30-irc.toml", "/etc/fingerd/secrets/irc-password",
                 "/etc/systemd/system/fingerd-irc.service.d"])
        box.run(["systemctl", "daemon-reload"])


def test_a_broken_config_never_closes_port_79(box: container.Container) -> None:
    """The file broken, then `systemctl restart fingerd-server.service`, with a client
    connecting throughout: port 79 keeps answering ("Finger service unavailable" while it is
    broken), neither unit ends failed, `journalctl -p err` names the file, line and key,
    `systemctl reload` fails visibly; and once the file is fixed the server recovers by itself
    within seconds: no `systemctl reset-failed`, no restart."""
    clients = Clients(box, 25)
    time.sleep(1)
    box.write_file(CONFIG, STATIC + "[server]\nlist_user = true\n")
    box.run(["systemctl", "restart", "fingerd-server.service"])
    wait_for(lambda: "Finger service unavailable" in finger_text(box, "moshez"),
             "the broken configuration to be answered")
    errors = box.run(["journalctl", "--no-pager", "-p", "err", "-u", "fingerd-server.service"])
    assert f"{CONFIG}:6: server.list_user: unknown key; did you mean 'list_users'?" in \
        errors.stdout, errors.stdout
    reload = box.run(["systemctl", "reload", "fingerd-server.service"], check=False)
    assert reload.returncode != 0
    for _ in range(3):  # more starts than the start limit would allow, had it exited
        box.run(["systemctl", "restart", "fingerd-server.service"])
    for unit in ("fingerd-server.socket", "fingerd-server.service"):
        assert unit_property(box, unit, "ActiveState") == "active", unit
    box.write_file(CONFIG, STATIC)
    fixed = time.monotonic()
    wait_for(lambda: finger_text(box, "moshez") == "Happy and well\r\n",
             "the server to pick up the fixed file", timeout=15)
    assert time.monotonic() - fixed < 10
    seen = clients.join()
    assert seen.get("Happy and well", 0) > 0 and seen.get("Finger service unavailable", 0) > 0
    assert "ConnectionRefusedError" not in seen, seen  # the port was never closed
    assert unit_property(box, "fingerd-server.socket", "Result") == "success"
    records = journal_records(box, "-u", "fingerd-server.service", "PRIORITY=3")
    assert records, "configuration errors are logged at priority err"


def test_reload_with_a_good_file_applies_it(box: container.Container) -> None:
    """`systemctl reload` validates, then the server takes the new file."""
    box.write_file(CONFIG, STATIC.replace("Happy and well", "Reloaded"))
    box.run(["systemctl", "reload", "fingerd-server.service"])
    wait_for(lambda: finger_text(box, "moshez") == "Reloaded\r\n", "the reload")
