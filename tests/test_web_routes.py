"""The web view's pure parts, for any input: routing, pages, WebFinger resources (issue 12).

No server here: hypothesis feeds fingerd/web/routes.py, pages.py and webfinger.py what any
client could send (and what any backend could answer), and checks that nothing raises, that
every response has its headers, and that no text reaches a page unescaped.
"""

from __future__ import annotations

import html.parser
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fingerd.config import Options
from fingerd.protocol import render
from fingerd.service import ANSWERED, DENIED, ERROR, INVALID, NO_SUCH_USER, Reply
from fingerd.web import pages
from fingerd.web.routes import Ask, Done, Request, route
from fingerd.web.settings import WebSettings
from fingerd.web.webfinger import ResourceError, parse_resource

SETTINGS = WebSettings(Options({"domains": ["example.org"]}, "test.toml", "web"))
# What h11 lets through as a request target: visible ASCII.
TARGETS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200).map(
    lambda t: "/" + t)
HEADERS = st.dictionaries(st.sampled_from([b"accept", b"host", b"x-forwarded-prefix",
                                           b"x-forwarded-for"]),
                          st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")))


class Text(html.parser.HTMLParser):
    """The elements of a page and the text of its title and <pre>."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.where: list[str] = []
        self.title = self.pre = ""
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.where.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.where and self.where[-1] == tag:
            self.where.pop()

    def handle_data(self, data: str) -> None:
        if self.where and self.where[-1] == "title":
            self.title += data
        elif self.where and self.where[-1] == "pre":
            self.pre += data


def check_response(response: pages.Response) -> None:
    headers = dict(response.headers)
    assert headers["Content-Length"] == str(len(response.body))
    assert headers["Content-Security-Policy"].startswith("default-src 'none';")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].endswith("; charset=utf-8")
    assert 200 <= response.status < 600


@settings(max_examples=200, deadline=None)
@given(TARGETS, HEADERS, st.sampled_from([ANSWERED, NO_SUCH_USER, DENIED, INVALID, ERROR]),
       st.text(max_size=300))
def test_any_request_routes_and_renders(target, headers, outcome, answer) -> None:
    """Any target and headers route to a finished response or a query line; rendering any
    reply (any outcome, any backend text after the output filter) gives a complete response."""
    result = route(Request("GET", target.encode(), headers, "127.0.0.1"), SETTINGS)
    if isinstance(result, Done):
        check_response(result.response)
        return
    assert isinstance(result, Ask)
    assert result.line.endswith(b"\r\n") and result.line.count(b"\n") == 1
    data = render(answer, max_bytes=4096, ascii_only=False)
    check_response(result.render(Reply(data, outcome)))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60).filter(lambda n: n.isprintable() and " " not in n),
       st.text(max_size=300), st.booleans())
def test_pages_escape_any_name_and_answer(name, answer, verbose) -> None:
    """Whatever the name and the answer, the page has exactly its own elements, its title
    and <pre> read back as the name and the answer, and links stay inside the page's site."""
    text = pages.answer_text(render(answer, max_bytes=4096, ascii_only=False))
    page = pages.html_page(name=name, text=text, prefix="/finger", verbose=verbose).decode()
    parsed = Text(page)
    assert parsed.tags == ["html", "head", "meta", "meta", "title", "style", "body", "h1",
                           "pre", "p", "a", "a", "form", "label", "input", "button"]
    assert parsed.title == f"{name} \N{MIDDLE DOT} finger"
    assert parsed.pre == text
    assert all(href.startswith("/finger/") for href in re.findall(r'href="([^"]*)"', page))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_resource_is_parsed_or_refused(resource) -> None:
    """Any resource value is an (account, host) pair or a 400/404 ResourceError, never
    anything else; an account name has no control characters and no blanks."""
    try:
        name, host = parse_resource(resource)
    except ResourceError as e:
        assert e.status in (400, 404)
        return
    assert name and name.isprintable() and not any(c.isspace() for c in name)
    assert host == host.lower() and "@" not in host


@pytest.mark.parametrize(("resource", "expected"), [
    ("acct:alice@example.org", ("alice", "example.org")),
    ("ACCT:alice@Example.ORG.", ("alice", "example.org")),
    ("acct:al%69ce@example.org", ("alice", "example.org")),
    ("acct:a%40b@example.org", ("a@b", "example.org")),
    ("acct:%C3%A9lise@example.org", ("\N{LATIN SMALL LETTER E WITH ACUTE}lise", "example.org")),
])
def test_acct_uris(resource, expected) -> None:
    """RFC 7565 acct: URIs: the scheme in any case, the userpart percent-decoded (an @ in it
    is %40), the host in lower case without its final dot."""
    assert parse_resource(resource) == expected
