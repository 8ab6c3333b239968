"""``fingerd web`` and bad input, over raw sockets: what no browser would send (issue 12).

Every case gets a short, clear answer (or a closed connection), within bounds, and the server
stays up: never a traceback on the wire or in the log, never a hung connection.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import STATIC
from web_helpers import Web, http_request, read_to_eof, running_web, status_of

READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    directory = tmp_path_factory.mktemp("web-input")
    directory.chmod(0o755)
    config = directory / "fingerd.toml"
    config.write_text(f"[server]\nread_timeout = {READ_TIMEOUT}\n" + STATIC)
    config.chmod(0o644)
    with running_web(config) as server:
        yield server
        log = server.log()
        assert "Traceback" not in log and "internal error" not in log, log


def still_serving(web: Web) -> None:
    assert web.get("/moshez?format=text").body == b"Happy and well\r\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                    "CONNECT", "PROPFIND", "BREW"])
def test_methods_other_than_get_and_head_are_405(web, method) -> None:
    """Any method but GET and HEAD: 405 with Allow: GET, HEAD, and the connection closed
    (a body it may have sent is not read)."""
    response = web.raw(http_request("/moshez", "Content-Length: 5", method=method) + b"hello")
    assert status_of(response) == 405
    assert b"\r\nAllow: GET, HEAD\r\n" in response
    assert b"\r\nConnection: close\r\n" in response


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /" + b"a" * 40000, 414),  # no line end at all
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000, 431),  # never ends
])
def test_request_line_and_headers_are_bounded(web, request_bytes, status) -> None:
    """A request target over 4 KiB is 414, a head over 16 KiB 431, whether it arrives whole or
    never ends; the server reads no more than that and closes."""
    started = time.monotonic()
    response = web.raw(request_bytes)
    assert status_of(response) == status
    assert time.monotonic() - started < READ_TIMEOUT  # refused at once, not timed out
    still_serving(web)


def test_refusals_of_head_requests_have_no_body(web) -> None:
    """A HEAD request that is refused (target too long, headers too large, a body too big)
    gets the status and headers of the refusal, and no body."""
    long_target = b"HEAD /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    big_head = b"HEAD / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n"
    big = 70 * 1024
    big_body = http_request("/", f"Content-Length: {big}", method="HEAD") + b"x" * big
    for request, status in ((long_target, 414), (big_head, 431), (big_body, 413)):
        response = web.raw(request)
        assert status_of(response) == status
        head, _, body = response.partition(b"\r\n\r\n")
        assert body == b"" and b"\r\nContent-Length: " in head, response


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS ClientHello
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    b"GET http://example.org/moshez HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get /moshez HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_garbage_is_400_and_nothing_breaks(web, garbage) -> None:
    """What is not HTTP/1.1 the way h11 reads it gets 400 and a closed connection (a request
    h11 accepts but we cannot route, such as an absolute URL or a lower-case method, gets its
    own 4xx); the server answers the next client."""
    response = web.raw(garbage, shut=True)
    assert 400 <= status_of(response) < 500, response[:100]
    assert b"Traceback" not in response
    still_serving(web)


def test_other_http_versions_are_505(web) -> None:
    """HTTP/2's preface and made-up versions get 505."""
    assert status_of(web.raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) == 505
    assert status_of(web.raw(b"GET /moshez HTTP/1.7\r\nHost: x\r\n\r\n")) == 505


def test_unknown_transfer_coding_is_501(web) -> None:
    """A body in a transfer coding other than chunked cannot be read: 501 (RFC 9112 §6.1),
    h11's answer, and the connection closed."""
    response = web.raw(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert status_of(response) == 501
    assert b"\r\nConnection: close\r\n" in response


def test_silent_client_is_cut_off_after_read_timeout(web) -> None:
    """A client that connects and sends nothing gets 408 after read_timeout and is closed."""
    started = time.monotonic()
    response = web.raw(b"")
    elapsed = time.monotonic() - started
    assert status_of(response) == 408
    assert READ_TIMEOUT - 0.1 <= elapsed < READ_TIMEOUT + 1.5, elapsed


def dribble(port: int, head: bytes, drip: bytes, pause: float = 0) -> tuple[bytes, float]:
    """Send ``head`` (its last two bytes ``pause`` seconds later), then ``drip`` a byte every
    0.2 s until the server answers; the answer, and when it came (seconds after connecting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        if head:
            s.sendall(head[:-2])
            time.sleep(pause)
            s.sendall(head[-2:])
        for byte in drip:
            if select.select([s], [], [], 0.2)[0]:
                break  # the server has answered (or closed)
            s.sendall(bytes([byte]))
        else:
            select.select([s], [], [], 10)
        answered = time.monotonic() - started
        return read_to_eof(s, timeout=10), answered


def test_dribbling_client_is_cut_off_after_read_timeout(web) -> None:
    """A client that sends its request a byte at a time, each well within any per-read
    timeout, is answered 408 read_timeout after it began, and closed."""
    response, answered = dribble(web.port, b"", http_request("/moshez"))
    assert status_of(response) == 408
    assert READ_TIMEOUT - 0.1 <= answered < READ_TIMEOUT + 1, answered


def test_a_slow_body_counts_against_the_same_read_timeout(web) -> None:
    """The head takes a second, then the body dribbles: the request as a whole, head and
    body, gets read_timeout from its start (not the body another), then 408."""
    response, answered = dribble(web.port, http_request("/moshez", "Content-Length: 100"),
                                 b"x" * 100, pause=1.0)
    assert status_of(response) == 408
    assert READ_TIMEOUT - 0.1 <= answered < READ_TIMEOUT + 0.5, answered


def test_idle_keep_alive_connection_is_closed_quietly(web) -> None:
    """After an answer, a keep-alive connection that asks nothing more is closed after
    read_timeout without a 408 (nothing was asked)."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as s:
        s.sendall(b"GET /moshez?format=text HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = read_to_eof(s, timeout=10)
    assert data.count(b"HTTP/1.1 ") == 1 and data.endswith(b"Happy and well\r\n")
    assert time.monotonic() - started < READ_TIMEOUT + 1.5


def test_pipelined_requests_are_answered_in_order(web) -> None:
    """Several requests in one packet on a keep-alive connection: each answered, in order;
    HTTP/1.0 and Connection: close end the connection after their answer."""
    requests = (b"GET /moshez?format=text HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /ghost HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /ghost?format=json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                b"GET /moshez HTTP/1.1\r\nHost: x\r\n\r\n")
    response = web.raw(requests)
    parts = response.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"404", b"404"]
    assert parts[0].endswith(b"Happy and well\r\n")
    assert json.loads(parts[2].split(b"\r\n\r\n", 1)[1]) == {"user": "ghost",
                                                             "answer": "No such user.\n"}
    http10 = web.raw(b"GET /moshez?format=text HTTP/1.0\r\n\r\n")
    assert http10.startswith(b"HTTP/1.1 200 ") and http10.endswith(b"Happy and well\r\n")


def test_a_body_on_get_is_read_and_bounded(web) -> None:
    """A GET with a small body is answered (the body read and ignored); one over 64 KiB gets
    413 and the connection closed."""
    small = web.raw(http_request("/moshez?format=text", "Content-Length: 5") + b"hello")
    assert status_of(small) == 200 and small.endswith(b"Happy and well\r\n")
    big = 70 * 1024
    response = web.raw(http_request("/moshez", f"Content-Length: {big}") + b"x" * big)
    assert status_of(response) == 413


def test_client_that_leaves_mid_request_is_logged_and_forgotten(web) -> None:
    """A client that half-sends a request and closes: no answer to send, one record saying it
    left, and the server goes on."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as s:
        s.sendall(b"GET /moshez HTTP/1.1\r\nHost: x\r\nX-Part")
        s.shutdown(socket.SHUT_WR)
        assert read_to_eof(s, timeout=5) == b""
    web.wait_log("outcome=disconnected")
    still_serving(web)


def test_busy_when_max_connections_are_taken(tmp_path: Path) -> None:
    """Over [server] max_connections a newcomer gets 503 with finger's busy line and
    Retry-After, and is served again once a connection is free."""
    tmp_path.chmod(0o755)
    config = tmp_path / "busy.toml"
    config.write_text("[server]\nmax_connections = 2\nread_timeout = 5\n" + STATIC)
    config.chmod(0o644)
    with running_web(config) as server:
        # An answered request: by then the start-up probe's connection is gone too.
        assert server.get("/moshez").status == 200
        holders = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(2)]
        try:
            for s in holders:
                s.sendall(b"GET")  # started, not finished: holds its slot
                s.settimeout(0.3)
                with pytest.raises(TimeoutError):  # admitted: no "busy" for the holders
                    s.recv(100)
            response = server.raw(http_request("/moshez"))
            assert status_of(response) == 503
            assert b"\r\nRetry-After: 1\r\n" in response
            assert response.endswith(b"Finger service busy, try again later\r\n")
        finally:
            for s in holders:
                s.close()
        deadline = time.monotonic() + 10
        while status_of(server.raw(http_request("/moshez"))) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_client_that_resets_mid_request_is_disconnected_not_an_error(make_config) -> None:
    """A client that resets the connection in the middle of its request: a `disconnected`
    record, never an internal error in the journal (any client could write those at will)."""
    import struct

    with running_web(make_config(STATIC)) as web:
        s = socket.create_connection(("127.0.0.1", web.port), timeout=10)
        s.sendall(b"GET /moshez HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        log = web.wait_log("outcome=disconnected")
        assert "internal error" not in log
        assert web.get("/moshez?format=text").body == b"Happy and well\r\n"


def test_a_keep_alive_connection_serves_at_most_100_requests(web) -> None:
    """101 pipelined requests on one connection: the first 100 are answered, the 100th says
    `Connection: close`, and the connection ends there (one client cannot hold it forever)."""
    from fingerd.web.connection import MAX_REQUESTS

    request = b"GET /moshez?format=text HTTP/1.1\r\nHost: x\r\n\r\n"
    response = web.raw(request * (MAX_REQUESTS + 1))
    parts = response.split(b"HTTP/1.1 ")[1:]
    assert len(parts) == MAX_REQUESTS == 100
    assert all(p.startswith(b"200 ") for p in parts)
    assert b"connection: close" in parts[-1].split(b"\r\n\r\n")[0].lower()
    assert b"connection: close" not in parts[-2].split(b"\r\n\r\n")[0].lower()
