"""``fingerd web``: the pages and their formats, over real sockets (issue 12).

One ``fingerd web`` per configuration, on a free loopback port; requests through the standard
library's HTTP client, answers compared with what the per-connection finger handler sends for
the same query and configuration. Bad input, WebFinger and the process's life are in
test_web_input.py, test_webfinger.py and test_web_process.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import Web, running_web

from fingerd.protocol import FORWARDING_DENIED, INVALID_QUERY, LIST_DENIED

USERS = r'''
[[backend]]
type = "static"
list = "moshez  Happy and well\noffice  Room 101"
[backend.users]
moshez = "Happy and well"
office = """Room 101
Phone x4242"""
evil = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
escapes = "\u001b]0;pwned\u0007\u001b[31mred\u001b[0m and \u009b2J\u202eevil"
accents = "Ça va, très bien"
quiet = ""
"first.last" = "A dotted name"
'''
NAMES = ["moshez", "office", "evil", "escapes", "accents", "quiet", "ghost", "first.last"]


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    """A directory `fingerd web` can read when it runs as nobody."""
    path = Path(tempfile.mkdtemp(prefix="fingerd-web-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def web(config_dir: Path) -> Iterator[Web]:
    """The default policy: no list, no forwarding, unknown users told apart."""
    with running_web(write_config(config_dir, "plain.toml", USERS)) as server:
        yield server


@pytest.fixture(scope="module")
def utf8_web(config_dir: Path) -> Iterator[Web]:
    """UTF-8 answers and the user list on."""
    text = '[server]\noutput_charset = "utf-8"\nlist_users = true\n' + USERS
    with running_web(write_config(config_dir, "utf8.toml", text)) as server:
        yield server


def pre_text(page: str) -> str:
    """The text of the page's <pre>, unescaped."""
    match = re.search(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert match, page
    return html.unescape(match.group(1))


# -- the same text as finger --------------------------------------------------------------------
@pytest.mark.parametrize("charset", ["ascii", "utf-8"])
def test_web_and_finger_answer_the_same_text(charset, web, utf8_web, config_dir,
                                             run_handler) -> None:
    """For every user, known, unknown, silent, hostile or not ASCII, with either output charset:
    text/plain is byte for byte what the finger handler sends for the same query and config,
    JSON's answer and the HTML page's <pre> are the same text with LF line ends, and the long
    form (?verbose=1, /W) too."""
    server = web if charset == "ascii" else utf8_web
    config = config_dir / ("plain.toml" if charset == "ascii" else "utf8.toml")
    for name in NAMES:
        for verbose in (False, True):
            finger = run_handler(config, f"{'/W ' if verbose else ''}{name}\r\n".encode()).answer
            query = "verbose=1&" if verbose else ""
            text = server.get(f"/{name}?{query}format=text")
            assert text.body == finger, name
            assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
            lf = finger.decode("utf-8").replace("\r\n", "\n")
            data = json.loads(server.get(f"/{name}?{query}format=json").body)
            assert data == {"user": name, "answer": lf}, name
            assert pre_text(server.get(f"/{name}?{query}").text) == lf, name
    assert run_handler(config, b"escapes\r\n").answer.startswith(b"red and ")


def test_html_page_escapes_the_answer_and_loads_nothing(web) -> None:
    """GET /NAME is a small HTML page: a title and heading with the name, the answer escaped in
    a <pre> (the status's <script> and <img> arrive as text), and no reference to anything to
    load: no script, no image, no stylesheet link, no external URL."""
    page = web.get("/evil")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert "<title>evil \N{MIDDLE DOT} finger</title>" in text
    assert "<h1>finger evil</h1>" in text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in text
    assert pre_text(text).startswith("<script>")
    markup = re.sub(r"<pre>.*?</pre>", "", text, flags=re.DOTALL)  # the page without the answer
    for tag in ("<script", "<img", "<link", "<iframe", "<object", "src=", "http:", "https:"):
        assert tag not in markup, tag


def test_style_is_allowed_by_its_hash_and_nothing_else(web) -> None:
    """The Content-Security-Policy forbids everything by default, allows the page's one inline
    style by its SHA-256 (so it is not blocked) and no script at all."""
    page = web.get("/moshez")
    csp = page.headers["Content-Security-Policy"]
    style = re.search(r"<style>(.*?)</style>", page.text, re.DOTALL)
    assert style
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["style-src"] == f"'sha256-{digest}'"
    assert "script-src" not in directives and "unsafe" not in csp
    assert directives["form-action"] == "'self'"


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "text/html"),
    ("*/*", "text/html"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
    ("text/plain", "text/plain"),
    ("application/json", "application/json"),
    ("application/json, text/plain;q=0.5", "application/json"),
    ("text/plain, text/html;q=0.1", "text/plain"),
    ("text/*;q=0.5, application/json", "application/json"),
    ("image/png", "text/html"),
    ("text/html;q=0, text/plain;q=0.2", "text/plain"),
])
def test_accept_negotiation(web, accept, expected) -> None:
    """The format follows the Accept header's q-values; HTML when nothing we have is wanted
    (or on a tie), and the response says it varies with Accept."""
    reply = web.get("/moshez", {"Accept": accept} if accept else {})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == f"{expected}; charset=utf-8", accept
    assert reply.headers["Vary"] == "Accept"


def test_format_parameter_wins_over_accept(web) -> None:
    """?format=text|json|html overrides Accept; any other format is a 400."""
    accept = {"Accept": "application/json"}
    assert web.get("/moshez?format=text", accept).body == b"Happy and well\r\n"
    assert web.get("/moshez?format=html", accept).headers["Content-Type"].startswith("text/html")
    assert web.get("/moshez?format=json", {"Accept": "text/plain"}).headers[
        "Content-Type"].startswith("application/json")
    assert web.get("/moshez?format=xml").status == 400


def test_verbose_asks_the_long_form(web) -> None:
    """?verbose=1 puts `/W NAME` to the service (the journal's query shows it); the page links
    the other form."""
    page = web.get("/office?verbose=1")
    assert page.status == 200
    web.wait_log('query="/W office"')
    assert '<a href="/office">short form</a>' in page.text
    assert '<a href="/office?verbose=1">long form</a>' in web.get("/office").text
    assert web.get("/office?verbose=maybe").status == 400


def test_unknown_user_is_404_with_finger_text(web) -> None:
    """An unknown user: 404, with finger's own text in every format."""
    for fmt, body in (("text", b"No such user.\r\n"),
                      ("json", b'"answer": "No such user.\\n"')):
        reply = web.get(f"/ghost?format={fmt}")
        assert reply.status == 404
        assert body in reply.body
    page = web.get("/ghost")
    assert page.status == 404 and pre_text(page.text) == "No such user.\n"


def test_refusals_are_403_with_finger_text(web) -> None:
    """The user list (list_users off) and forwarding (an @ in NAME, forwarding off) get the
    finger refusal texts with 403; the start page then shows the lookup form alone."""
    assert web.get("/?format=text").body == LIST_DENIED.encode() + b"\r\n"
    assert web.get("/?format=text").status == 403
    for path in ("/someone@elsewhere.example", "/a%40b", "/@example.org"):
        reply = web.get(path + "?format=text")
        assert (reply.status, reply.body) == (403, FORWARDING_DENIED.encode() + b"\r\n"), path
    start = web.get("/")
    assert start.status == 200
    assert "<pre>" not in start.text and '<form method="get" action="/">' in start.text


def test_names_that_are_not_one_word_are_400(web) -> None:
    """Percent-decoded names with control characters, blanks or invalid UTF-8 are refused as
    finger refuses such a query; a / is part of the name for the service to judge."""
    for path in ("/a%00b", "/a%20b", "/a+b%09", "/%1b%5b31m", "/%ff", "/x%0d%0aSet-Cookie:%20a=b",
                 "/%e2%80%ae"):
        reply = web.get(path + "?format=text")
        assert (reply.status, reply.body) == (400, INVALID_QUERY.encode() + b"\r\n"), path
    assert web.get("/x/y?format=text").status == 404  # no such user, said by the service
    assert web.get("/first.last?format=text").body == b"A dotted name\r\n"
    assert web.get("/%6Doshez?format=text").body == b"Happy and well\r\n"  # percent-decoded


def test_lookup_form_asks_for_the_user(web) -> None:
    """The form (GET /?user=NAME) answers as /NAME does."""
    assert web.get("/?user=moshez&format=text").body == b"Happy and well\r\n"
    assert web.get("/?user=+moshez+").status == 200
    assert web.get("/?user=a+b&format=text").status == 400


def test_head_has_the_headers_of_get_and_no_body(web) -> None:
    """HEAD answers with exactly GET's status and headers, and no body."""
    for path in ("/moshez", "/ghost", "/", "/.well-known/webfinger?resource=acct:x@example.org"):
        get, head = web.get(path), web.get(path, method="HEAD")
        assert head.body == b""
        assert (head.status, head.header_list) == (get.status, get.header_list), path


def test_every_response_carries_the_security_headers(web) -> None:
    """Whatever the answer — a page, an error, a refusal, a JRD — it says its type with a
    charset, forbids scripts, framing and referrers, is not to be sniffed and says how long it
    may be cached."""
    paths = ["/moshez", "/ghost", "/a@b", "/%00", "/?format=json", "/moshez?format=text",
             "/.well-known/webfinger", "/.well-known/webfinger?resource=acct:moshez@x.example"]
    for path in paths:
        reply = web.get(path)
        headers = reply.headers
        assert re.fullmatch(r"[a-z+/]+; charset=utf-8", headers["Content-Type"]), path
        assert headers["Content-Security-Policy"].startswith("default-src 'none';"), path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert re.fullmatch(r"max-age=\d+|no-store", headers["Cache-Control"]), path
        assert int(headers["Content-Length"]) == len(reply.body), path
    assert web.get("/moshez").headers["Cache-Control"] == "max-age=60"
    assert web.get("/a@b").headers["Cache-Control"] == "no-store"


def test_user_list_when_list_users_is_on(utf8_web) -> None:
    """With list_users on, / is the list from the backends in a <pre> (and the form), and
    /?format=text exactly the list finger sends for an empty query."""
    page = utf8_web.get("/")
    assert page.status == 200
    assert pre_text(page.text) == "moshez  Happy and well\noffice  Room 101\n"
    assert '<form method="get" action="/">' in page.text
    assert utf8_web.get("/?format=text").body == b"moshez  Happy and well\r\noffice  Room 101\r\n"


def test_conceal_unknown_makes_missing_and_silent_users_alike(config_dir) -> None:
    """With conceal_unknown, a missing user and a user with nothing to say get the same status,
    headers and body, in every format (but for the name the page repeats)."""
    config = write_config(config_dir, "conceal.toml", "[server]\nconceal_unknown = true\n" + USERS)
    with running_web(config) as server:
        for fmt in ("html", "text", "json"):
            ghost, quiet = server.get(f"/ghost?format={fmt}"), server.get(f"/quiet?format={fmt}")
            assert ghost.status == quiet.status == 200, fmt
            assert ghost.header_list == quiet.header_list, fmt
            assert ghost.body.replace(b"ghost", b"quiet") == quiet.body, fmt
        assert server.get("/ghost?format=text").body == b"No information.\r\n"


def test_links_follow_base_path(config_dir) -> None:
    """[web] base_path puts the prefix the proxy mounts the pages at into every link and the
    form's action."""
    config = write_config(config_dir, "base.toml", '[web]\nbase_path = "/finger/"\n' + USERS)
    with running_web(config) as server:
        page = server.get("/moshez", {"X-Forwarded-Prefix": "/ignored"}).text
        assert '<a href="/finger/moshez?verbose=1">long form</a>' in page
        assert '<a href="/finger/">start</a>' in page
        assert '<form method="get" action="/finger/">' in page
        assert '<a href="/finger/first.last?verbose=1">' in server.get("/first.last").text


def test_links_follow_x_forwarded_prefix_from_a_trusted_proxy(web, config_dir) -> None:
    """Without base_path, a trusted proxy's X-Forwarded-Prefix is the links' prefix; a value
    that is not a path (//host, a scheme, quotes) is ignored, and so is the header from a
    peer that is not a trusted proxy."""
    page = web.get("/moshez", {"X-Forwarded-Prefix": "/people"}).text
    assert '<a href="/people/">start</a>' in page
    for bad in ("//evil.example", "https://evil.example", '/a"onmouseover="x', "people"):
        page = web.get("/moshez", {"X-Forwarded-Prefix": bad}).text
        assert '<a href="/">start</a>' in page, bad
    config = write_config(config_dir, "untrusted.toml",
                          '[web]\ntrusted_proxies = ["192.0.2.1"]\n' + USERS)
    with running_web(config) as server:
        page = server.get("/moshez", {"X-Forwarded-Prefix": "/people"}).text
        assert '<a href="/">start</a>' in page


LOCAL_NOBODY = """
[[backend]]
type = "local"
uid_min = 65534
uid_max = 65534
show_private_homes = true
form = "long"
fields = ["login"]
local_fields = ["login", "name"]
"""


def test_askers_through_a_proxy_are_remote_for_the_backends(make_config) -> None:
    """The web view behind a proxy cannot vouch for anybody's address: backends see the asker
    as remote (the `local` backend shows `fields`, not `local_fields`). Only a client that
    talks to it directly from this host (no trusted proxy) is local."""
    with running_web(make_config(LOCAL_NOBODY)) as web:  # 127.0.0.1: a trusted proxy
        answer = web.get("/nobody?format=text").body.decode()
        assert answer.startswith("Login: nobody") and "Name:" not in answer, answer
    with running_web(make_config(LOCAL_NOBODY + "[web]\ntrusted_proxies = []\n")) as web:
        answer = web.get("/nobody?format=text").body.decode()
        assert "Name: nobody" in answer, answer
