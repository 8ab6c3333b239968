"""Operations as a Debian admin expects (issue 9), on the host: drop-ins in fingerd.d/, secrets
as systemd credentials, `fingerd check` and `fingerd query` seeing what the service sees, and a
long-running server that a broken configuration does not stop.

The same, with systemd itself (a booted container, the .deb, the units' ExecReload= and
LoadCredential=): tests/test_e2e_ops.py.
"""

from __future__ import annotations

import http.server
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import FINGERD, STATIC, ask, env, free_port, require

from fingerd.config import DEFAULT_PATH
from fingerd.protocol import UNAVAILABLE


def fingerd(*args: str, extra_env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a fingerd command; its output as text, line ends as they are (CRLF on the wire)."""
    proc = subprocess.run([*FINGERD, *args], capture_output=True,
                          env=env(**(extra_env or {})), timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


@pytest.fixture
def etc(public_dir: Path) -> Path:
    """A configuration directory laid out as /etc/fingerd: fingerd.toml and fingerd.d/."""
    (public_dir / "fingerd.d").mkdir()
    (public_dir / "fingerd.d").chmod(0o755)
    return public_dir


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- drop-ins ---------------------------------------------------------------------------------


def test_a_dropin_adds_a_backend_and_changes_server_without_editing_the_file(etc: Path) -> None:
    """/etc/fingerd/fingerd.d/*.toml are read after the main file, in lexical order: a drop-in
    appends its [[backend]] to the chain and overrides the [server] keys it sets; a later
    drop-in wins over an earlier one. The main file is untouched."""
    main = write(etc / "fingerd.toml", STATIC + "[server]\nread_timeout = 5\n")
    write(etc / "fingerd.d" / "20-office.toml",
          '[server]\nlist_users = true\nread_timeout = 7\n'
          '[[backend]]\ntype = "static"\n[backend.users]\noffice = "Room 101"\n')
    write(etc / "fingerd.d" / "30-later.toml", "[server]\nread_timeout = 8\n")
    write(etc / "fingerd.d" / "README", "not a drop-in: no .toml\n")
    query = fingerd("query", "--config", str(main), "office")
    assert query.stdout == "Room 101\r\n", query.stderr
    assert fingerd("query", "--config", str(main), "moshez").stdout == "Happy and well\r\n"
    dump = fingerd("check", "--config", str(main), "--dump")
    assert dump.returncode == 0, dump.stderr
    assert "list_users = true" in dump.stdout
    assert "read_timeout = 8.0" in dump.stdout  # the last drop-in wins
    backends = dump.stdout.split("[[backend]]")[1:]
    assert len(backends) == 2
    assert "moshez" in backends[0] and f"from {main}" in backends[0]
    assert "office" in backends[1] and "20-office.toml" in backends[1]
    check = fingerd("check", "--config", str(main))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"drop-in {etc}/fingerd.d/20-office.toml" in check.stdout
    assert check.stdout.index("20-office") < check.stdout.index("30-later")


def test_an_error_in_a_dropin_names_the_dropin_and_its_line(etc: Path) -> None:
    """A mistake in a drop-in is reported with the drop-in's own file and line, and the key
    as the merged configuration names it (backend[2] is the drop-in's first)."""
    main = write(etc / "fingerd.toml", STATIC)
    dropin = write(etc / "fingerd.d" / "50-web.toml",
                   '# a comment\n[[backend]]\ntype = "static"\nuserz = {}\n')
    check = fingerd("check", "--config", str(main))
    assert check.returncode == 1
    assert f"{dropin}:4: backend[2].userz: unknown key; did you mean 'users'?" in check.stderr
    write(dropin, "[server]\nlist_users = 3\n")
    check = fingerd("check", "--config", str(main))
    assert f"{dropin}:2: server.list_users: expected a boolean" in check.stderr


def test_a_relative_path_in_a_dropin_is_relative_to_the_dropin(etc: Path) -> None:
    """A `file` backend's relative path is relative to the file that configures it."""
    main = write(etc / "fingerd.toml", "")
    write(etc / "fingerd.d" / "status", "alice: in the drop-in's directory\n")
    write(etc / "fingerd.d" / "10-file.toml", '[[backend]]\ntype = "file"\npath = "status"\n')
    assert fingerd("query", "--config", str(main), "alice").stdout == \
        "in the drop-in's directory\r\n"


def test_a_mistyped_key_gets_a_did_you_mean(make_config) -> None:
    """An unknown key close to a known one names it."""
    check = fingerd("check", "--config", str(make_config("[server]\nlist_user = true\n")))
    assert "server.list_user: unknown key; did you mean 'list_users'?" in check.stderr


# -- secrets as systemd credentials -------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the user name, and remembers the Authorization header."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        body = b"authorised" if self.headers.get("Authorization") == "Bearer s3cret" else b"?"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_header_comes_from_a_systemd_credential(make_config, public_dir: Path,
                                                  recorder: int) -> None:
    """`{credential:NAME}` in a header value is the credential NAME from
    $CREDENTIALS_DIRECTORY (what LoadCredential= gives the unit): the token reaches the HTTP
    server, and is written in no file the config names."""
    credentials = public_dir / "credentials"
    credentials.mkdir()
    write(credentials / "status-token", "s3cret\n", 0o644)
    url = f"http://127.0.0.1:{recorder}/{{user}}"
    config = make_config(f'[[backend]]\ntype = "http"\nurl = "{url}"\n[backend.headers]\n'
                         'Authorization = "Bearer {credential:status-token}"\n')
    assert "s3cret" not in config.read_text()
    run = fingerd("query", "--config", str(config), "alice",
                  extra_env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert run.stdout == "authorised\r\n", run.stderr
    assert Recorder.seen == ["Bearer s3cret"]


def test_a_missing_credential_is_a_config_error_that_says_what_to_add(make_config) -> None:
    """Without the credential the config cannot be used, and the message names the key and
    the LoadCredential= line the unit needs."""
    config = make_config('[[backend]]\ntype = "http"\nurl = "http://127.0.0.1:1/{user}"\n'
                         '[backend.headers]\nAuthorization = "Bearer {credential:status-token}"\n')
    check = fingerd("check", "--config", str(config))
    assert check.returncode == 1
    assert ":5: backend[1].headers.Authorization: credential 'status-token' is not given" \
        in check.stderr
    assert "LoadCredential=status-token:" in check.stderr


# -- check and query see what the service sees ---------------------------------------------------


@pytest.mark.root
def test_check_says_when_the_service_cannot_read_the_config(make_config) -> None:
    """chmod 600 (as an admin does to hide a token): run as root, `fingerd check` reads it
    as the service would, fails, and says why; root's own view would have said OK."""
    config = make_config(STATIC)
    config.chmod(0o600)
    check = fingerd("check", "--config", str(config))
    assert check.returncode == 1
    assert "Permission denied" in check.stderr
    assert "the service's user cannot read it" in check.stderr
    query = fingerd("query", "--config", str(config), "moshez")
    assert query.stdout == ""
    assert "the service's user cannot read it" in query.stderr


def test_check_with_no_file_says_built_in_defaults() -> None:
    """No /etc/fingerd/fingerd.toml: "absent: the built-in defaults", not a bare OK."""
    require(not Path(DEFAULT_PATH).exists() and not Path(DEFAULT_PATH[:-5] + ".d").exists(),
            f"{DEFAULT_PATH} exists on this machine")
    proc = subprocess.run([*FINGERD, "check"], capture_output=True, text=True, timeout=60,
                          env=env())
    assert proc.returncode == 0, proc.stderr
    assert "absent: the built-in defaults" in proc.stdout


def test_check_probes_each_backend(make_config, public_dir: Path) -> None:
    """A status file that is not there and a URL that refuses pass validation but fail every
    query: check probes each backend once, says what it found, and exits 3."""
    closed = free_port()  # nothing listens there
    config = make_config(f'[[backend]]\ntype = "file"\npath = "{public_dir}/no-such-status"\n'
                         f'[[backend]]\ntype = "http"\nurl = "http://127.0.0.1:{closed}/{{user}}"\n'
                         + STATIC)
    check = fingerd("check", "--config", str(config))
    assert check.returncode == 3, check.stdout + check.stderr
    assert f"status file {public_dir}/no-such-status: No such file or directory" in check.stdout
    assert "cannot connect" in check.stdout
    assert "backend 3: static (fingerd.backends.static.StaticBackend): ok" in check.stdout
    assert fingerd("check", "--no-probe", "--config", str(config)).returncode == 0


@pytest.mark.root
def test_query_as_root_answers_what_a_client_gets(make_config, public_dir: Path) -> None:
    """A status file only root can read: as root, `fingerd query` answers as the service
    does (the file cannot be read: unknown), not with the file's content."""
    status = write(public_dir / "private-status", "bob: secret plans\n", 0o600)
    config = make_config(f'[[backend]]\ntype = "file"\npath = "{status}"\n' + STATIC)
    query = fingerd("query", "--config", str(config), "bob")
    assert query.stdout == "No such user.\r\n"
    assert "as nobody" in query.stderr
    check = fingerd("check", "--config", str(config))
    assert check.returncode == 3
    assert "Permission denied" in check.stdout


# -- a broken configuration never stops `fingerd serve` ------------------------------------------


def test_serve_with_a_broken_config_answers_unavailable_and_recovers_by_itself(
        make_config, serve) -> None:
    """Started with a broken file, serve does not exit (which under systemd would end in the
    start limit and a failed socket): it answers "Finger service unavailable", logs the error
    once, and picks up the fixed file by itself within seconds, without a signal."""
    config = make_config("[server]\nlist_users = maybe\n")
    server = serve(config)
    assert b"configuration error" in server.head and b":2: " in server.head
    assert ask(server.port, b"moshez\r\n") == UNAVAILABLE.encode() + b"\r\n"
    config.write_text(STATIC)
    deadline = time.monotonic() + 10
    while ask(server.port, b"moshez\r\n") != b"Happy and well\r\n":
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert server.proc.stderr is not None
    rest = server.proc.stderr.read()
    assert rest.count(b"configuration error") == 0  # said once, not every retry
    assert b"configuration reloaded" in rest
