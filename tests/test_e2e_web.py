"""End to end on a booted systemd: fingerd-web.socket behind a real nginx (issue 12).

A container of its own (tests/container.py) installs the .deb, enables the web view as the
README says, and puts Debian's nginx (nginx-light, in the image, not started at boot) in front
of it under a path prefix, with the README's snippet: the pages and WebFinger work through it,
and answer the same text as finger on port 79. The tests run in the order written.

Needs root, debootstrap and systemd-nspawn (``make e2e-deps``); skipped with the reason
otherwise, failing instead in CI. The .deb is ``$FINGERD_DEB`` when set, else built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from e2e import booted, finger_text, unit_property

pytestmark = pytest.mark.systemd

CONFIG = "/etc/fingerd/fingerd.toml"
SOCKET, SERVICE = "fingerd-web.socket", "fingerd-web.service"
USERS = r'''
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
alice = "Writing a finger server"
evil = "<script>document.title='pwned'</script>"
escapes = "\u001b]0;pwned\u0007\u001b[31mred\u001b[0m"
'''
WEB = '''
[web]
domains = ["example.org"]

[web.users.alice]
[[web.users.alice.links]]
rel = "self"
type = "application/activity+json"
href = "https://mastodon.example/users/alice"
[[web.users.alice.links]]
rel = "http://webfinger.net/rel/profile-page"
type = "text/html"
href = "https://mastodon.example/@alice"
'''
# The README's nginx snippet ("The web view and WebFinger"), in a server of its own.
NGINX_SITE = """\
server {
    listen 127.0.0.1:80;
    listen [::1]:80;
    server_name example.org;

    location /finger/ {
        proxy_pass http://127.0.0.1:8079/;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Prefix /finger;
    }
    location = /.well-known/webfinger {
        proxy_pass http://127.0.0.1:8079;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
"""
DYNAMIC_UIDS = range(61184, 65520)


@pytest.fixture(scope="module")
def box(deb: Path) -> Iterator[container.Container]:
    """A booted bookworm with the package installed."""
    with booted(deb) as c:
        yield c


def curl(box: container.Container, url: str, *args: str) -> str:
    """curl in the container: the status line and headers, then the body."""
    return box.run(["curl", "-sS", "-i", "--max-time", "20", *args, url], timeout=40).stdout


def body(response: str) -> str:
    return response.split("\r\n\r\n", 1)[1]


def status(response: str) -> int:
    return int(response.split(" ", 2)[1])


def test_web_units_are_installed_not_enabled(box: container.Container) -> None:
    """The package installs fingerd-web.socket and fingerd-web.service, neither enabled nor
    started; they load without a warning."""
    assert unit_property(box, SOCKET, "UnitFileState") == "disabled"
    for unit in (SOCKET, SERVICE):
        assert unit_property(box, unit, "ActiveState") == "inactive", unit
    verify = box.run(["systemd-analyze", "verify", "--man=no", SOCKET, SERVICE])
    assert verify.stderr.strip() == "", verify.stderr
    assert box.run(["ss", "-Htln", "sport", "= :8079"]).stdout.strip() == ""


def test_enable_serves_on_loopback_from_a_sandboxed_process(box: container.Container) -> None:
    """`systemctl enable --now fingerd-web.socket` listens on 127.0.0.1:8079 and [::1]:8079
    only; the first request starts one `fingerd web` (Type=notify) as a transient user without
    capabilities, which answers on both addresses; systemd-analyze rates it at most 1.5."""
    box.write_file(CONFIG, USERS + WEB)
    box.run(["fingerd", "check", "--no-probe"])
    box.run(["systemctl", "enable", "--now", SOCKET])
    listening = box.run(["ss", "-Htln", "sport", "= :8079"]).stdout
    assert sorted(re.findall(r"(127\.0\.0\.1|\[::1\]):8079", listening)) == [
        "127.0.0.1", "[::1]"], listening
    for url in ("http://127.0.0.1:8079/moshez", "http://[::1]:8079/moshez"):
        assert body(curl(box, url, "-H", "Accept: text/plain")) == "Happy and well\r\n", url
    assert unit_property(box, SERVICE, "SubState") == "running"
    assert unit_property(box, SERVICE, "Type") == "notify"
    pid = unit_property(box, SERVICE, "MainPID")
    proc = box.run(["cat", f"/proc/{pid}/status"]).stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", proc, re.MULTILINE)
    assert uids and all(int(u) in DYNAMIC_UIDS for u in uids.groups()), proc
    assert re.search(r"^CapEff:\s+0+$", proc, re.MULTILINE), proc
    score = box.run(["systemd-analyze", "security", "--no-pager", SERVICE]).stdout
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", score)
    assert level and float(level.group(1)) <= 1.5, score


def test_web_and_finger_answer_the_same_text(box: container.Container) -> None:
    """For the same users and policy, the web view's text/plain answer is byte for byte what
    fingerd.socket answers on port 79, also for a hostile status and an unknown user."""
    for name in ("moshez", "evil", "escapes", "nobody-here"):
        web = curl(box, f"http://127.0.0.1:8079/{name}?format=text")
        assert body(web) == finger_text(box, name), name
    assert status(curl(box, "http://127.0.0.1:8079/nobody-here")) == 404


def test_nginx_in_front_under_a_path_prefix(box: container.Container) -> None:
    """nginx with the README's snippet serves the pages under /finger/: the answer, links and
    form carry the prefix, unknown users are 404; a request from another client address is
    logged with that address (X-Forwarded-For from a trusted proxy)."""
    box.run("rm -f /etc/nginx/sites-enabled/default")
    box.write_file("/etc/nginx/sites-enabled/fingerd", NGINX_SITE)
    box.run(["nginx", "-t"])
    box.run(["systemctl", "start", "nginx.service"])
    page = curl(box, "http://127.0.0.1/finger/evil", "-H", "Host: example.org")
    assert status(page) == 200
    assert "<pre>&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;\n</pre>" in page
    assert '<a href="/finger/evil?verbose=1">long form</a>' in page
    assert '<form method="get" action="/finger/">' in page
    assert "Content-Security-Policy: default-src 'none';" in page
    start = curl(box, "http://[::1]/finger/", "-H", "Host: example.org")
    assert status(start) == 200 and 'action="/finger/"' in start
    found = curl(box, "http://127.0.0.1/finger/?user=moshez&format=text", "-H",
                 "Host: example.org")
    assert body(found) == "Happy and well\r\n"
    assert status(curl(box, "http://127.0.0.1/finger/ghost", "-H", "Host: example.org")) == 404
    curl(box, "http://127.0.0.1/finger/alice", "-H", "Host: example.org",
         "--interface", "127.0.0.2")
    records = box.run(["journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=fingerd",
                       f"_SYSTEMD_UNIT={SERVICE}", "FINGER_USER=alice"]).stdout
    fields = [json.loads(line) for line in records.splitlines() if line.strip()]
    assert fields and fields[-1]["REMOTE_ADDR"] == "127.0.0.2", fields
    assert fields[-1]["FINGER_FRONTEND"] == "web"


def test_webfinger_through_nginx(box: container.Container) -> None:
    """Through nginx, `acct:alice@example.org` resolves to her account on another server:
    200, application/jrd+json, CORS, her links; rel filters; an unknown account and a
    foreign host are 404, a missing resource 400."""
    base = "http://127.0.0.1/.well-known/webfinger"
    reply = curl(box, f"{base}?resource=acct:alice@example.org", "-H", "Host: example.org")
    assert status(reply) == 200
    assert "Content-Type: application/jrd+json; charset=utf-8" in reply
    assert "Access-Control-Allow-Origin: *" in reply
    jrd = json.loads(body(reply))
    assert jrd["subject"] == "acct:alice@example.org"
    assert {"rel": "self", "type": "application/activity+json",
            "href": "https://mastodon.example/users/alice"} in jrd["links"]
    only = json.loads(body(curl(box, f"{base}?resource=acct%3Aalice%40example.org&rel=self",
                                "-H", "Host: example.org")))
    assert [link["rel"] for link in only["links"]] == ["self"]
    for query, expected in (("resource=acct:nobody@example.org", 404),
                            ("resource=acct:alice@elsewhere.example", 404), ("", 400)):
        assert status(curl(box, f"{base}?{query}", "-H", "Host: example.org")) == expected


def test_reload_and_stop(box: container.Container) -> None:
    """`systemctl reload fingerd-web.service` applies an edited config in the same process;
    `systemctl stop` ends it with status 0; `apt remove` stops the socket and frees the port."""
    pid = unit_property(box, SERVICE, "MainPID")
    box.write_file(CONFIG, USERS.replace("Happy and well", "Reloaded") + WEB)
    box.run(["systemctl", "reload", SERVICE])
    reloaded = body(curl(box, "http://127.0.0.1:8079/moshez?format=text"))
    for _ in range(50):
        if reloaded == "Reloaded\r\n":
            break
        reloaded = body(curl(box, "http://127.0.0.1:8079/moshez?format=text"))
    assert reloaded == "Reloaded\r\n"
    assert unit_property(box, SERVICE, "MainPID") == pid
    box.run(["systemctl", "stop", SERVICE, SOCKET])
    assert unit_property(box, SERVICE, "ExecMainStatus") == "0"
    assert unit_property(box, SERVICE, "Result") == "success"
    box.run(["systemctl", "start", SOCKET])
    assert status(curl(box, "http://127.0.0.1:8079/moshez")) == 200
    box.run(["apt-get", "remove", "-y", "fingerd"], timeout=120)
    for unit in (SERVICE, SOCKET):
        assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() \
            == "inactive", unit
    assert box.run(["ss", "-Htln", "sport", "= :8079"]).stdout.strip() == ""
