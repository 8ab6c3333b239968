"""fingerd.httpclient on its own: ``get()`` against real servers on loopback (Python's
http.server, with TLS from a test CA), against a raw-socket server that sends what no HTTP
server would (backend_fixtures.RawServer), and fuzzed with hypothesis against that server:
malformed status lines and heads, chunk sizes, bodies, early closes, resets and slow drips.
Whatever the server sends, ``get`` returns by its deadline, reads no more than ``max_bytes``
of body and a bounded head, and raises only HttpError or TimeoutError.

Bytes received are counted by the sockets themselves: ``get`` makes them with
``socket_type``, here a subclass of ``_socket.socket`` whose ``recv`` adds up what it returns.
"""

from __future__ import annotations

import _socket
import os
import re
import time
from collections.abc import Callable, Iterator

import pytest
from backend_fixtures import RawServer, StatusServer, Step, TestCA
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fingerd import httpclient
from fingerd.httpclient import HEAD_BYTES, MAX_REDIRECTS, REDIRECTS, TLS, HttpError

DEADLINE = 0.4  # seconds per fuzzed get()
SLACK = 0.5  # scheduling on a shared 2-core machine; get() itself stops at the deadline
FUZZ_EXAMPLES = int(os.environ.get("FINGERD_FUZZ_EXAMPLES", "150"))


def counting(total: list[int]) -> Callable[[int, int, int], _socket.socket]:
    """A socket type whose instances add every byte they receive to ``total[0]``."""
    class Counting(_socket.socket):
        def recv(self, size: int, flags: int = 0) -> bytes:
            data = super().recv(size, flags)
            total[0] += len(data)
            return data
    return Counting


def most_read(max_bytes: int) -> int:
    """What one get() may receive: the body and one byte more (to see that a body that ends
    at the close is too long), and a bounded head for the answer and each redirect."""
    return max_bytes + 1 + (1 + MAX_REDIRECTS) * HEAD_BYTES


def answer(body: bytes, *head: bytes) -> list[Step]:
    return [("read", None), ("send", b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in head)
                             + b"\r\n" + body)]


# -- against Python's http.server ------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[StatusServer]:
    with StatusServer({
        "/text": lambda h: h.send_text("hello", headers={"X-Two": "2"}),
        "/missing": lambda h: h.send_text("an error page", 404),
        "/redirect-home": lambda h: h.redirect("/headers"),
        "/loop": lambda h: h.redirect("/loop", 307),
        "/headers": lambda h: h.send_text(repr(sorted(h.headers.items()))),
    }) as running:
        yield running


def test_get_returns_status_headers_and_body(server: StatusServer) -> None:
    """A 200 answer: status, reason, headers by lower-case name, the body, the URL."""
    response = httpclient.get(server.url("/text"), time.monotonic() + 5)
    assert (response.status, response.reason, response.body) == (200, "OK", b"hello")
    assert response.headers["x-two"] == "2"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert str(response.url) == server.url("/text")


def test_error_answers_are_returned_without_their_body(server: StatusServer) -> None:
    """A 404 is a Response (the caller decides what it means), its error page unread."""
    response = httpclient.get(server.url("/missing"), time.monotonic() + 5)
    assert (response.status, response.body) == (404, b"")


def test_headers_go_only_to_the_origin(server: StatusServer) -> None:
    """Headers given to get() are sent to the URL's scheme, host and port, and after a
    redirect within it, but not to another port a redirect leads to (one that redirect_hosts
    allows; by default such a redirect is refused); a header of the same name replaces the
    client's default."""
    token = {"Authorization": "Bearer s3cret", "User-Agent": "mine"}
    home = httpclient.get(server.url("/redirect-home"), time.monotonic() + 5, token)
    assert "('Authorization', 'Bearer s3cret')" in home.body.decode()
    assert "('User-Agent', 'mine')" in home.body.decode()
    with StatusServer({"/": lambda h: h.send_text(repr(sorted(h.headers.items())))}) as other:
        server.routes["/away"] = lambda h: h.redirect(other.url("/x"))
        with pytest.raises(HttpError, match=r"redirect to another host \(127\.0\.0\.1:"):
            httpclient.get(server.url("/away"), time.monotonic() + 5, token)
        away = httpclient.get(server.url("/away"), time.monotonic() + 5, token,
                              redirect_hosts=[f"127.0.0.1:{other.port}"]).body.decode()
    assert "s3cret" not in away and "('User-Agent', 'fingerd/" in away


def test_redirect_loops_end_after_the_limit(server: StatusServer) -> None:
    """A redirect loop: MAX_REDIRECTS redirects followed, then an HttpError."""
    with pytest.raises(HttpError, match="more than 3 redirects"):
        httpclient.get(server.url("/loop"), time.monotonic() + 5)
    assert len(server.requests) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("url,headers,reason", [
    ("ftp://127.0.0.1/", {}, "not an http or https URL"),
    ("http://b\u00fccher.example/", {}, "xn-- form"),
    ("http://127.0.0.1/", {"Host": "elsewhere"}, "set by fingerd itself"),
    ("http://127.0.0.1/", {"X-A": "1\r\nX-B: 2"}, "control characters"),
    ("http://127.0.0.1/", {"Bad Name": "1"}, "not a valid HTTP header name"),
])
def test_bad_arguments_are_value_errors(url: str, headers: dict[str, str], reason: str) -> None:
    """A URL or header the caller got wrong is a ValueError, before any connection."""
    with pytest.raises(ValueError, match=reason):
        httpclient.get(url, time.monotonic() + 5, headers)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def test_https_never_downgrades_to_http(ca: TestCA, server: StatusServer) -> None:
    """Over TLS (the test CA's certificate, checked), an answer comes; a redirect from https
    to http is refused."""
    tls = TLS(ca_file=str(ca.ca_cert))
    with StatusServer({"/text": lambda h: h.send_text("secure"),
                       "/down": lambda h: h.redirect(server.url("/text"))},
                      tls=ca.server_context()) as secure:
        assert httpclient.get(secure.url("/text"), time.monotonic() + 5, tls=tls).body \
            == b"secure"
        with pytest.raises(HttpError, match="redirect from https to http refused"):
            httpclient.get(secure.url("/down"), time.monotonic() + 5, tls=tls)
    assert server.requests == []


# -- against a hostile server --------------------------------------------------------------------

@pytest.mark.parametrize("coding", ["gzip, chunked", "chunked, chunked", "deflate", "identity",
                                    "gzip", ""])
def test_transfer_codings_other_than_chunked_fail(coding: str) -> None:
    """Only ``Transfer-Encoding: chunked`` is read; any other coding, also one before
    chunked, is an HttpError: its bytes are not the body."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    with RawServer(answer(body, b"Transfer-Encoding: " + coding.encode())) as hostile, \
            pytest.raises(HttpError, match=r"Transfer-Encoding .* not supported"):
        httpclient.get(hostile.url(), time.monotonic() + 5)


def test_chunked_and_interim_responses() -> None:
    """1xx responses before the answer are skipped; a chunked body with extensions and a
    trailer is reassembled; a bare LF ends lines too."""
    script: list[Step] = [("read", None), ("send", b"HTTP/1.1 100 Continue\r\n\r\n"
                          b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
                          b"3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: 1\r\n\r\n")]
    with RawServer(script) as hostile:
        assert httpclient.get(hostile.url(), time.monotonic() + 5).body == b"abc0123456789"


def test_a_reset_is_an_http_error() -> None:
    """A connection reset in the middle of the head is an HttpError naming the URL, not a
    bare ConnectionResetError."""
    script: list[Step] = [("read", None), ("send", b"HTTP/1.1 200 OK\r\nContent-"),
                          ("sleep", 0.05), ("reset", None)]
    with RawServer(script) as hostile, pytest.raises(HttpError, match=re.escape(hostile.url())):
        httpclient.get(hostile.url(), time.monotonic() + 5)


def test_a_drip_is_cut_at_the_deadline() -> None:
    """A server that sends one byte every 50 ms, each read quick, the whole never done:
    TimeoutError at the deadline."""
    drip: list[Step] = [("read", None), ("send", b"HTTP/1.1 200 OK\r\n")]
    drip += [step for _ in range(100) for step in (("sleep", 0.05), ("send", b"X"))]
    with RawServer(drip) as hostile:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            httpclient.get(hostile.url(), started + 0.5)
        assert time.monotonic() - started < 0.5 + SLACK


@pytest.mark.parametrize("what,script", [
    ("endless headers", answer(b"", *[b"X-Pad: " + b"p" * 1000] * 90)),
    ("one endless line", [("read", None), ("send", b"HTTP/1.1 200 OK\r\nX: " + b"x" * 300_000)]),
    ("endless chunk extensions", answer((b"1;" + b"e" * 8000 + b"\r\nx\r\n") * 50,
                                        b"Transfer-Encoding: chunked")),
    ("one-byte chunks", answer(b"1\r\nz\r\n" * 60_000, b"Transfer-Encoding: chunked")),
    ("a body to the close", answer(b"b" * 500_000)),
    ("a long announced body", answer(b"b" * 500_000, b"Content-Length: 500000")),
])
def test_reads_are_bounded(what: str, script: list[Step]) -> None:
    """Heads, chunk framing and bodies far over the limits: an HttpError, with no more
    received than max_bytes + 1 of body and HEAD_BYTES of head and framing."""
    total = [0]
    with RawServer(script) as hostile, pytest.raises(HttpError):
        httpclient.get(hostile.url(), time.monotonic() + 5, max_bytes=1000,
                       socket_type=counting(total))
    assert 0 < total[0] <= 1000 + 1 + HEAD_BYTES, what


# -- fuzzed ---------------------------------------------------------------------------------------

EOL = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b""])
STATUS = st.one_of(st.sampled_from([
    b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 404 Not Found", b"HTTP/1.1 500 Oops", b"HTTP/1.1 302 Found",
    b"HTTP/1.1 308 Permanent", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
    b"HTTP/1.1 101 Switching", b"HTTP/1.1 2\xb20 OK", b"HTTP/1.1 0200 OK", b"HTTP/1.1 999 X",
    b"HTTP/1.1 099 X", b"HTTP/2 200", b"ICY 200 OK", b"HTTP/1.1  200 OK", b"", b"\x00\xff"]),
    st.binary(max_size=40))
LOCATIONS = [b"/again", b"http://@SELF@/x", b"//@SELF@/y", b"https://@SELF@/tls", b"?q=1",
             b"file:///etc/passwd", b"", b"http://[::1", b"http://h\x00st/", b"\xff\xfe",
             b"http://@SELF@:99999/", b"http://\xb2@SELF@/", b"javascript:x", b"relative",
             b"http://127.0.0.1:\xb9/"]
NUMBERS = st.one_of(st.integers(0, 2**80).map(lambda n: str(n).encode()), st.sampled_from(
    [b"", b"-1", b"+5", b"0x10", b"5, 6", b"5, 5", b"\xb2", b"1" * 5000, b" 3 ", b"1_0"]))
FIELDS = st.one_of(
    NUMBERS.map(lambda n: b"Content-Length: " + n),
    st.sampled_from([b"chunked", b"gzip, chunked", b"chunked, gzip", b"Chunked", b" chunked ",
                     b"identity", b"", b"chunked;q=1"]).map(lambda c: b"Transfer-Encoding: " + c),
    st.sampled_from(LOCATIONS).map(lambda loc: b"Location: " + loc),
    st.sampled_from([b"Content-Encoding: gzip", b"Content-Encoding: identity",
                     b"Content-Type: text/plain", b"Connection: keep-alive", b" folded",
                     b"\tfolded", b"no colon", b": no name", b"X-\x00: y", b"Bad Name: 1",
                     b"X-Long: " + b"l" * 9000, b"X-Line: " + b"l" * 8180]),
    st.binary(max_size=60))


def blob(most: int = 300) -> st.SearchStrategy[bytes]:
    """Bytes: a few, or a short piece repeated up to 3000 times (up to 192 KiB)."""
    return st.one_of(st.binary(max_size=most), st.builds(
        lambda piece, count: piece * count, st.binary(min_size=1, max_size=64),
        st.integers(1, 3000)))


CHUNK_SIZES = st.sampled_from([b"-1", b"+5", b"0x5", b"1_0", b"ffffffffffffffffffff", b"",
                               b" 5 ", b"5;" + b"e" * 9000, b"g", b"00000000000000000001"])
LAST_CHUNK = st.sampled_from([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"0\r\n", b"",
                              b"0\r\nT: " + b"t" * 70_000 + b"\r\n\r\n", b"00\n\n"])


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for data in draw(st.lists(blob(), max_size=5)):
        size = draw(st.one_of(st.just(b"%x" % len(data)), CHUNK_SIZES))
        parts.append(size + draw(EOL) + data + draw(st.one_of(EOL, st.binary(max_size=4))))
    return b"".join(parts) + draw(LAST_CHUNK)


@st.composite
def scripts(draw: st.DrawFn) -> list[Step]:
    """A response, well formed or not in any part, delivered in pieces with pauses, ending in
    a close, a reset, or a wait past the deadline."""
    head = draw(STATUS) + draw(EOL)
    head += b"".join(field + draw(EOL) for field in draw(st.lists(FIELDS, max_size=8)))
    body = draw(st.one_of(blob(), chunked_bodies()))
    response = head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body
    cuts = sorted(set(draw(st.lists(st.integers(0, len(response)), max_size=4))))
    script: list[Step] = [("read", None)] if draw(st.booleans()) else []
    start = 0
    for cut in [*cuts, len(response)]:
        script.append(("send", response[start:cut]))
        script.append(("sleep", draw(st.sampled_from([0, 0, 0.01, 0.05, 0.15]))))
        start = cut
    ending = draw(st.sampled_from(["close", "reset", "wait"]))
    if ending == "reset":
        script.append(("reset", None))
    elif ending == "wait":
        script.append(("sleep", DEADLINE + 0.2))
    return script


@pytest.fixture(scope="module")
def hostile() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(script=scripts(), max_bytes=st.sampled_from([1, 100, 5000]))
@example(script=answer(b"x" * 70_000), max_bytes=100)
@example(script=answer(b"", b"Content-Length: " + b"9" * 5000), max_bytes=100)
@example(script=[("send", b"HTTP/1.1 2\xb20 OK\r\n\r\n")], max_bytes=100)
@example(script=answer(b"abc", b"Content-Length: \xb3"), max_bytes=100)
@example(script=answer(b"1" * 5000 + b"\r\n", b"Transfer-Encoding: chunked"), max_bytes=100)
@example(script=[("read", None), ("send", b"HTTP/1.1 200 OK\r\n"), ("reset", None)],
         max_bytes=100)
def test_whatever_the_server_sends(hostile: RawServer, script: list[Step],
                                   max_bytes: int) -> None:
    """Whatever the server sends, get() returns within its deadline, receives at most
    max_bytes + 1 of body and a bounded head per response, and raises only HttpError or
    TimeoutError; what it returns is a final status with at most max_bytes of body."""
    hostile.script = script
    total = [0]
    started = time.monotonic()
    try:
        response = httpclient.get(hostile.url("/fuzz"), started + DEADLINE,
                                  {"Authorization": "Bearer x"}, max_bytes,
                                  socket_type=counting(total))
    except (HttpError, TimeoutError):
        response = None
    assert time.monotonic() - started < DEADLINE + SLACK
    assert total[0] <= most_read(max_bytes)
    if response is not None:
        assert 100 <= response.status < 600 and response.status not in REDIRECTS
        assert len(response.body) <= max_bytes
        assert response.body == b"" or 200 <= response.status < 300
