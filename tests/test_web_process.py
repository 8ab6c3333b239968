"""``fingerd web`` as a process: sockets from systemd, reload, stop, the journal records, the
``[web]`` table and ``fingerd check`` (issue 12)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FINGERD, IS_ROOT, STATIC, env, free_port, require, stop, wait_listening
from web_helpers import http_request, read_to_eof, running_web, status_of

from fingerd.config import ConfigError, load
from fingerd.web.settings import WebSettings

REPO = Path(__file__).resolve().parent.parent


def test_reload_on_sighup_and_keep_the_old_config_when_broken(make_config) -> None:
    """SIGHUP rereads the config (a changed answer shows at once); a broken file is logged as
    an error naming it, and the running configuration answers on."""
    config = make_config(STATIC)
    with running_web(config) as web:
        config.write_text(STATIC.replace("Happy and well", "Reloaded"))
        web.proc.send_signal(signal.SIGHUP)
        web.wait_log("configuration reloaded")
        assert web.get("/moshez?format=text").body == b"Reloaded\r\n"
        config.write_text(STATIC + '\n[web]\nbase_path = "no slash"\n')
        web.proc.send_signal(signal.SIGHUP)
        log = web.wait_log("reload failed")
        assert f"{config}:" in log and "web.base_path" in log
        assert web.get("/moshez?format=text").body == b"Reloaded\r\n"
        assert web.proc.poll() is None


def test_sigterm_finishes_the_request_in_flight_and_exits_0(make_config) -> None:
    """On SIGTERM the server stops listening, closes idle connections, still answers a request
    that had begun, and exits 0 after logging "stopped"."""
    config = make_config(STATIC)
    with running_web(config) as web:
        idle = socket.create_connection(("127.0.0.1", web.port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", web.port), timeout=10)
        try:
            request = http_request("/moshez?format=text")
            busy.sendall(request[:10])
            time.sleep(0.3)
            web.proc.send_signal(signal.SIGTERM)
            assert read_to_eof(idle, timeout=5) == b""  # closed, nothing was asked
            with pytest.raises(OSError):  # not listening any more
                socket.create_connection(("127.0.0.1", web.port), timeout=2).close()
            busy.sendall(request[10:])
            answer = read_to_eof(busy, timeout=10)
            assert status_of(answer) == 200 and answer.endswith(b"Happy and well\r\n")
            assert b"\r\nConnection: close\r\n" in answer
        finally:
            idle.close()
            busy.close()
        assert web.proc.wait(timeout=15) == 0
        assert web.log().rstrip().endswith("fingerd: stopped")


def test_one_record_per_request_with_the_forwarded_client(make_config) -> None:
    """Each request is one record (frontend=web, the finger query, user, backend, outcome).
    Behind a trusted proxy (loopback by default) the client is the last X-Forwarded-For
    address; from any other peer that header is ignored."""
    with running_web(make_config(STATIC)) as web:
        web.get("/moshez", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
        log = web.wait_log("remote=203.0.113.9")
        line = next(x for x in log.splitlines() if "remote=203.0.113.9" in x)
        assert 'query="moshez" backend=static outcome=answered' in line
        assert line.endswith("frontend=web")
    untrusted = make_config('[web]\ntrusted_proxies = ["192.0.2.0/24"]\n' + STATIC)
    with running_web(untrusted) as web:
        web.get("/ghost", {"X-Forwarded-For": "203.0.113.9"})
        log = web.wait_log('query="ghost"')
        assert "remote=127.0.0.1 " in log and "203.0.113.9" not in log
        assert "outcome=no_such_user" in log


def test_listens_on_ipv6(make_config) -> None:
    """--listen [::1]:PORT works."""
    with running_web(make_config(STATIC), host="::1") as web:
        assert web.get("/moshez?format=text").body == b"Happy and well\r\n"


def test_takes_its_sockets_from_systemd(make_config) -> None:
    """Started as fingerd-web.socket starts it (Accept=no: the listening sockets passed in,
    LISTEN_FDS), it serves on every socket it was given, IPv4 and IPv6."""
    activator = shutil.which("systemd-socket-activate")
    require(activator is not None, "systemd-socket-activate not installed (Debian systemd)")
    assert activator is not None
    port = free_port()
    user = ["--user", "nobody"] if IS_ROOT else []
    proc = subprocess.Popen([activator, "-l", f"127.0.0.1:{port}", "-l", f"[::1]:{port}",
                             *FINGERD, "web", "--config", str(make_config(STATIC)), *user],
                            env=env(), stderr=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.1", port)
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(http_request("/moshez?format=text"))
                assert read_to_eof(s, timeout=10).endswith(b"\r\n\r\nHappy and well\r\n"), host
    finally:
        stop(proc)


@pytest.mark.root
def test_refuses_to_serve_as_root_without_user(make_config) -> None:
    """As root, `fingerd web` without --user refuses to start (exit 2), as fingerd serve."""
    out = subprocess.run([*FINGERD, "web", "--config", str(make_config(STATIC)), "--listen",
                          f"127.0.0.1:{free_port()}"], env=env(), capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 2 and "--user" in out.stderr


# -- [web] and fingerd check ------------------------------------------------------------------
def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FINGERD, "check", "--config", str(config)], env=env(),
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("table", "key", "reason"), [
    ('base_pth = "/finger"', "web.base_pth", "unknown key"),
    ('base_path = "finger"', "web.base_path", "URL path"),
    ('base_path = "//evil.example"', "web.base_path", "URL path"),
    ('domains = ["exa mple.org"]', "web.domains", "not a host name"),
    ('trusted_proxies = ["proxy"]', "web.trusted_proxies", "not an address"),
    ("cache_seconds = -1", "web.cache_seconds", "between 0 and 86400"),
    ('users = "alice"', "web.users", "expected a table"),
    ('[web.users.alice]\naliases = ["not a uri"]', "web.users.alice.aliases", "absolute URI"),
    ('[web.users.alice]\nlinks = ["self"]', "web.users.alice.links", "array of tables"),
    ('[[web.users.alice.links]]\nrel = "self"', "web.users.alice.links[1].href",
     "either href or template"),
    ('[[web.users.alice.links]]\nrel = "self"\nhref = "https://a.example/"\ntemplate = "x:y"',
     "web.users.alice.links[1].href", "either href or template"),
    ('[[web.users.alice.links]]\nrel = "my rel"\nhref = "https://a.example/"',
     "web.users.alice.links[1].rel", "without blanks"),
    ('[[web.users.alice.links]]\nrel = "self"\nhref = "//a.example/"',
     "web.users.alice.links[1].href", "absolute URI"),
    ('[[web.users.alice.links]]\nrel = "self"\ntype = "json"\nhref = "https://a.example/"',
     "web.users.alice.links[1].type", "media type"),
    ('[[web.users.alice.links]]\nrel = "self"\nhref = "https://a.example/"\nhreff = "x"',
     "web.users.alice.links[1].hreff", "unknown key"),
])
def test_check_reports_a_bad_web_table(make_config, table, key, reason) -> None:
    """`fingerd check` validates [web] like every table: exit 1, the file, the key and why."""
    config = make_config(STATIC + "\n[web]\n" + table + "\n")
    out = check(config)
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(f"fingerd: {config}"), out.stderr
    assert f": {key}: " in out.stderr and reason in out.stderr, out.stderr


def test_check_names_the_line_of_a_bad_key(make_config) -> None:
    """An unknown key of [web] is reported with its line."""
    config = make_config(STATIC + '\n[web]\ndomains = ["example.org"]\nbase_pth = "/x"\n')
    line = STATIC.count("\n") + 4
    assert f"fingerd: {config}:{line}: web.base_pth: unknown key" in check(config).stderr


def test_check_summarises_a_good_web_table(make_config) -> None:
    """A valid [web] table: exit 0 and one line saying what the web view does."""
    config = make_config(STATIC + '\n[web]\nbase_path = "/finger"\ndomains = ["example.org"]\n'
                         '[[web.users.moshez.links]]\nrel = "self"\n'
                         'href = "https://social.example/users/moshez"\n')
    out = check(config)
    assert out.returncode == 0, out.stderr
    assert ("  web: base_path = /finger, WebFinger for example.org, 1 account(s) with links"
            in out.stdout)
    assert "web:" not in check(make_config(STATIC)).stdout  # no [web]: nothing to say


def test_shipped_config_documents_every_web_setting(tmp_path: Path) -> None:
    """The commented [web] example of /etc/fingerd/fingerd.toml, switched on, is a valid table
    that shows every key WebSettings reads."""
    import re

    text = re.sub(r'^#(?=[\[A-Za-z"])', "", (REPO / "debian/fingerd.toml").read_text(),
                  flags=re.MULTILINE)
    path = tmp_path / "fingerd.toml"
    path.write_text(text)
    config = load(str(path))
    settings = WebSettings(config.frontends["web"])
    assert settings.configured and settings.users
    web = text[text.index("\n[web]\n"):]
    for key in ("base_path", "domains", "trusted_proxies", "cache_seconds", "aliases", "rel",
                "type", "href", "template"):
        assert re.search(rf"^{key} = ", web, re.MULTILINE), key
    path.write_text(text.replace("cache_seconds = 60", "cache_seconds = 1e3"))
    with pytest.raises(ConfigError, match=r"web\.cache_seconds: expected an integer"):
        WebSettings(load(str(path)).frontends["web"])
