"""The ``http`` backend against real HTTP and HTTPS servers on loopback (port 0, a thread):
a slow one, one that drips, one that returns 500, huge bodies, redirect loops, JSON, 404,
redirects to file:, TLS with a CA the test makes with the openssl command. DNS failures and
a resolver that never answers are tested in a private network namespace: no test leaves the
machine."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_fixtures import (
    PYTHON,
    REPO,
    RawServer,
    StatusHandler,
    StatusServer,
    TestCA,
    child_env,
    free_port,
    make_backend,
    needs_root,
    public_dir,
    recv_all,
    run_handler,
    run_installed,
    write_config,
)

from fingerd.backends import service_from
from fingerd.backends.http import quote
from fingerd.config import Config
from fingerd.protocol import Query
from fingerd.testing import BackendContract, World


def text(body: str | bytes, content_type: str = "text/plain; charset=utf-8",
         status: int = 200, **headers: str) -> Callable[[StatusHandler], None]:
    return lambda h: h.send_text(body, status, content_type, headers)


def as_json(value: object, content_type: str = "application/json") -> Callable[[StatusHandler],
                                                                                 None]:
    return text(json.dumps(value), content_type)


def slow(handler: StatusHandler) -> None:
    handler.server.stopping.wait(5)
    handler.send_text("too late")


def drip(handler: StatusHandler) -> None:
    """Headers at once, then one byte every 0.2 s: each read is quick, the whole is not."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", "50")
    handler.end_headers()
    for _ in range(50):
        if handler.server.stopping.wait(0.2):
            return
        handler.wfile.write(b"x")
        handler.wfile.flush()


def huge(mode: str) -> Callable[[StatusHandler], None]:
    """10 MiB, announced (Content-Length), close-delimited or chunked; stops when the client
    hangs up."""
    def route(handler: StatusHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        if mode == "length":
            handler.send_header("Content-Length", str(10 * 1024 * 1024))
        elif mode == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        block = b"y" * 65536
        for _ in range(160):
            if mode == "chunked":
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            else:
                handler.wfile.write(block)
        if mode == "chunked":
            handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True
    return route


def chunked(handler: StatusHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"8;ext=1\r\nchunked \r\n6\r\nanswer\r\n0\r\nX-Trailer: 1\r\n\r\n")
    handler.close_connection = True


def redirect_chain(handler: StatusHandler) -> None:
    """/r/N redirects to /r/N-1; /r/0 is the answer."""
    hops = int(handler.path.rsplit("/", 1)[1])
    if hops:
        handler.redirect(f"/r/{hops - 1}", 307 if hops % 2 else 301)
    else:
        handler.send_text("arrived")


def echo_path(handler: StatusHandler) -> None:
    handler.send_text(handler.path)


def echo_headers(handler: StatusHandler) -> None:
    handler.send_text(f"token={handler.headers.get('Authorization')} "
                      f"agent={handler.headers.get('User-Agent')}")


ROUTES = {
    "/status/alice": text("Alice is in"),
    "/status/latin": text(b"caf\xe9", "text/plain; charset=iso-8859-1"),
    "/status/bob": as_json({"status": "Bob is away", "other": 1}),
    "/status/carl": as_json({"status": "Carl's JSON"}, "application/vnd.status+json"),
    "/status/msg": as_json({"message": "custom field"}),
    "/status/nostatus": as_json({"other": "x"}),
    "/status/notstring": as_json({"status": 42}),
    "/status/list": as_json(["status"]),
    "/status/badjson": text("{not json", "application/json"),
    "/status/html": text("<b>hi</b>", "text/html"),
    "/status/notype": text("no type", ""),
    "/status/gzip": text(b"\x1f\x8b...", "text/plain", **{"Content-Encoding": "gzip"}),
    "/status/empty": text(""),
    "/status/e500": text("boom", status=500),
    "/status/e403": text("no", status=403),
    "/status/slow": slow,
    "/status/drip": drip,
    "/status/huge-length": huge("length"),
    "/status/huge-close": huge("close"),
    "/status/huge-chunked": huge("chunked"),
    "/status/chunked": chunked,
    "/status/loop": lambda h: h.redirect("/status/loop"),
    "/status/r3": lambda h: h.redirect("/r/2"),
    "/status/r4": lambda h: h.redirect("/r/3"),
    "/r/": redirect_chain,
    "/status/to-file": lambda h: h.redirect("file:///etc/passwd"),
    "/status/to-ftp": lambda h: h.redirect("ftp://127.0.0.1/status"),
    "/status/to-relative": lambda h: h.redirect("alice"),
    "/status/no-location": text("", status=302),
    "/echo/": echo_path,
    "/headers/": echo_headers,
}


@pytest.fixture
def server() -> Iterator[StatusServer]:
    with StatusServer(dict(ROUTES)) as running:
        yield running


def backend_for(server: StatusServer, path: str = "/status/{user}", **options: object):  # type: ignore[no-untyped-def]
    return make_backend({"type": "http", "url": server.url(path), "timeout": 2.0, **options})


def failure(backend: object, user: str) -> str:
    """The reason a lookup failed (what the chain logs)."""
    with pytest.raises(Exception) as caught:
        backend.lookup(Query(user))  # type: ignore[attr-defined]
    return f"{type(caught.value).__name__}: {caught.value}"


# -- the contract ---------------------------------------------------------------------------------

class TestHttpContract(BackendContract):
    @pytest.fixture
    def world(self, server: StatusServer) -> World:
        return World(table={"type": "http", "url": server.url("/status/{user}")},
                     known="alice", expect="Alice is in",
                     bad_options=[("url", "http://127.0.0.1/no-placeholder"),
                                  ("url", "ftp://127.0.0.1/{user}"),
                                  ("url", "http://{user}.example.org/"),
                                  ("url", "http://user:pw@127.0.0.1/{user}"),
                                  ("url", "http://127.0.0.1:99999/{user}"),
                                  ("timeout", 0), ("timeout", "3"), ("max_bytes", 0),
                                  ("tls_verify", "no"), ("json_field", ""),
                                  ("headers", {"Bad Name": "x"}),
                                  ("headers", {"X-Evil": "a\r\nInjected: 1"}),
                                  ("headers", {"Host": "elsewhere"}),
                                  ("ca_file", "/nonexistent/ca.pem")])


# -- answers --------------------------------------------------------------------------------------

def test_text_plain_answer(server: StatusServer) -> None:
    """A 200 text/plain body is the answer, decoded in its charset."""
    backend = backend_for(server)
    assert backend.lookup(Query("alice")) == "Alice is in"
    assert backend.lookup(Query("latin")) == "caf\u00e9"


def test_json_answer(server: StatusServer) -> None:
    """A JSON object's "status" string is the answer (application/json or +json)."""
    backend = backend_for(server)
    assert backend.lookup(Query("bob")) == "Bob is away"
    assert backend.lookup(Query("carl")) == "Carl's JSON"


def test_json_field_is_configurable(server: StatusServer) -> None:
    """``json_field`` names the field that holds the answer."""
    assert backend_for(server, json_field="message").lookup(Query("msg")) == "custom field"


@pytest.mark.parametrize("user,reason", [
    ("nostatus", "JSON body has no string field 'status'"),
    ("notstring", "JSON body has no string field 'status'"),
    ("list", "JSON body has no string field 'status'"),
    ("badjson", "not valid JSON"),
    ("html", "Content-Type 'text/html' not accepted"),
    ("notype", "Content-Type '(none)' not accepted"),
    ("gzip", "Content-Encoding 'gzip' not supported"),
    ("e500", "HTTP 500 Internal Server Error"),
    ("e403", "HTTP 403 Forbidden"),
    ("no-location", "HTTP 302 without Location"),
])
def test_unusable_answers_are_failures(server: StatusServer, user: str, reason: str) -> None:
    """Anything but text/plain, a JSON object with the field, or 404 fails the lookup with
    a reason that names the URL."""
    message = failure(backend_for(server), user)
    assert reason in message
    assert server.url(f"/status/{user}") in message


GZIP_CHUNKED = [("read", None), ("send", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                  b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
                  + b"%x\r\n%s\r\n0\r\n\r\n" % (len(gzip.compress(b"Alice is in")),
                                               gzip.compress(b"Alice is in")))]


def test_transfer_codings_before_chunked_fail() -> None:
    """``Transfer-Encoding: gzip, chunked`` (a real gzip stream in chunks, from a hostile
    server on loopback) fails the lookup: the compressed bytes never reach the client as
    text (issue 15). The chain logs the reason and the next backend answers."""
    with RawServer(GZIP_CHUNKED) as hostile:
        backend = make_backend({"type": "http", "url": hostile.url("/status/{user}")})
        assert "Transfer-Encoding 'gzip, chunked' not supported" in failure(backend, "alice")
        service = service_from(Config("t", {"backend": [
            {"type": "http", "url": hostile.url("/status/{user}")},
            {"type": "static", "users": {"alice": "from static"}}]}))
        assert service.respond(b"alice\r\n").data == b"from static\r\n"


def test_404_is_unknown_and_the_chain_goes_on(server: StatusServer) -> None:
    """HTTP 404: the service does not know the user; the next backend answers."""
    service = service_from(Config("t", {"backend": [
        {"type": "http", "url": server.url("/status/{user}")},
        {"type": "static", "users": {"zed": "from static"}}]}))
    reply = service.respond(b"zed\r\n")
    assert (reply.data, reply.backend) == (b"from static\r\n", "static")
    assert service.respond(b"nobody-at-all\r\n").data == b"No such user.\r\n"


def test_failure_is_logged_and_the_chain_goes_on(server: StatusServer,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """HTTP 500: the journal gets the backend and the reason, the client the next answer."""
    service = service_from(Config("t", {"backend": [
        {"type": "http", "url": server.url("/status/{user}")},
        {"type": "static", "users": {"e500": "fallback"}}]}))
    assert service.respond(b"e500\r\n").data == b"fallback\r\n"
    log = capsys.readouterr().err
    assert "backend http failed for 'e500': HttpError: " in log
    assert "/status/e500: HTTP 500 Internal Server Error" in log


def test_empty_answer_is_no_information(server: StatusServer) -> None:
    """An empty 200 body: the user exists with nothing to say."""
    service = service_from(Config("t", {"backend": [
        {"type": "http", "url": server.url("/status/{user}")}]}))
    assert service.respond(b"empty\r\n").data == b"No information.\r\n"


def test_chunked_answer(server: StatusServer) -> None:
    """A chunked body (with chunk extensions and a trailer) is reassembled."""
    assert backend_for(server).lookup(Query("chunked")) == "chunked answer"


# -- the user name in the URL ---------------------------------------------------------------------

@pytest.mark.parametrize("user,path", [
    ("alice", "/echo/alice"), ("a/b", "/echo/a%2Fb"), ("../etc", "/echo/..%2Fetc"),
    ("a?b#c", "/echo/a%3Fb%23c"), ("100%", "/echo/100%25"), ("zo\u00eb", "/echo/zo%C3%AB"),
    ("~x_y-z.w", "/echo/~x_y-z.w")])
def test_user_name_is_percent_encoded(server: StatusServer, user: str, path: str) -> None:
    """The user name is percent-encoded into the path: it cannot add segments, a query, a
    fragment or anything else to the URL."""
    assert backend_for(server, "/echo/{user}").lookup(Query(user)) == path
    assert quote(user) == path[len("/echo/"):]


def test_dot_segments_are_not_requested(server: StatusServer) -> None:
    """``.`` and ``..`` would be resolved by the server before routing: unknown, no request."""
    backend = backend_for(server, "/echo/{user}")
    assert backend.lookup(Query("..")) is None
    assert backend.lookup(Query(".")) is None
    assert server.requests == []


def test_placeholder_in_the_query_string(server: StatusServer) -> None:
    """``{user}`` may stand in the query string, percent-encoded there too."""
    backend = backend_for(server, "/echo/lookup?user={user}&x=1")
    assert backend.lookup(Query("a&b=c")) == "/echo/lookup?user=a%26b%3Dc&x=1"


# -- headers --------------------------------------------------------------------------------------

def test_configured_headers_are_sent(server: StatusServer) -> None:
    """``headers`` go with the request; fingerd names itself in User-Agent."""
    backend = backend_for(server, "/headers/{user}", headers={"Authorization": "Bearer s3cret"})
    answer = backend.lookup(Query("x"))
    assert answer is not None and answer.startswith("token=Bearer s3cret agent=fingerd/")


def test_a_redirect_elsewhere_is_refused_unless_allowed(server: StatusServer) -> None:
    """A redirect to another host or port (here a server on another loopback port, as an
    upstream could point at an internal service) fails the lookup: fingerd fetches only from
    where its URL points. With the target in redirect_hosts it is followed, and configured
    headers (tokens) still go to the configured origin only."""
    with StatusServer({"/headers/": echo_headers}) as other:
        server.routes["/status/away"] = lambda h: h.redirect(other.url("/headers/x"))
        backend = backend_for(server, headers={"Authorization": "Bearer s3cret"})
        assert "redirect to another host (127.0.0.1:" in failure(backend, "away")
        allowed = make_backend({"type": "http", "url": server.url("/status/{user}"),
                                "headers": {"Authorization": "Bearer s3cret"},
                                "redirect_hosts": [f"127.0.0.1:{other.port}"]})
        assert allowed.lookup(Query("away")) == "token=None agent=fingerd/0.1.0"
    server.routes["/status/home"] = lambda h: h.redirect("/headers/x")
    backend = backend_for(server, headers={"Authorization": "Bearer s3cret"})
    assert backend.lookup(Query("home")) == "token=Bearer s3cret agent=fingerd/0.1.0"


# -- redirects ------------------------------------------------------------------------------------

def test_up_to_three_redirects_are_followed(server: StatusServer) -> None:
    """Three redirects (301, 302, 307) are followed; a relative Location is resolved."""
    backend = backend_for(server)
    assert backend.lookup(Query("r3")) == "arrived"
    assert backend.lookup(Query("to-relative")) == "Alice is in"


def test_more_than_three_redirects_fail(server: StatusServer) -> None:
    """A fourth redirect, or a loop, fails the lookup, after at most four requests."""
    assert "more than 3 redirects" in failure(backend_for(server), "r4")
    before = len(server.requests)
    assert "more than 3 redirects" in failure(backend_for(server), "loop")
    assert len(server.requests) - before == 4


@pytest.mark.parametrize("user,scheme", [("to-file", "file"), ("to-ftp", "ftp")])
def test_redirect_to_other_schemes_is_refused(server: StatusServer, user: str,
                                              scheme: str) -> None:
    """A redirect to file:, ftp: or anything but http/https is refused, not followed."""
    assert f"redirect to a {scheme}: URL refused" in failure(backend_for(server), user)


# -- bounds: time and size ------------------------------------------------------------------------

def test_slow_server_times_out(server: StatusServer) -> None:
    """A server that does not answer: a failure after ``timeout``, not a hang, that names
    the URL and the backend's own timeout."""
    backend = backend_for(server, timeout=0.5)
    started = time.monotonic()
    message = failure(backend, "slow")
    assert f"TimeoutError: {server.url('/status/slow')}: no answer within 0.5 s" == message
    assert 0.4 < time.monotonic() - started < 1.5


def test_timeout_covers_the_whole_response(server: StatusServer) -> None:
    """A server that sends a byte every 0.2 s never lets one read time out; the deadline
    covers connect and the whole response together."""
    backend = backend_for(server, timeout=1.0)
    started = time.monotonic()
    assert "no answer within 1 s" in failure(backend, "drip")
    assert time.monotonic() - started < 2


def test_timeout_covers_redirects(server: StatusServer) -> None:
    """Redirects do not restart the clock: one deadline for the whole lookup."""
    server.routes["/status/via"] = lambda h: h.redirect("/status/slow")
    backend = backend_for(server, timeout=0.5)
    started = time.monotonic()
    failure(backend, "via")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("user", ["huge-length", "huge-close", "huge-chunked"])
def test_body_over_max_bytes_is_a_failure(server: StatusServer, user: str) -> None:
    """A body over max_bytes (announced, close-delimited or chunked) fails the lookup
    without being read to its end."""
    backend = backend_for(server, max_bytes=65536)
    started = time.monotonic()
    assert "body larger than max_bytes = 65536" in failure(backend, user)
    assert time.monotonic() - started < 1.5


def test_body_at_max_bytes_is_fine(server: StatusServer) -> None:
    """max_bytes is inclusive: a body of exactly that size is the answer."""
    server.routes["/status/exact"] = text("z" * 100)
    assert backend_for(server, max_bytes=100).lookup(Query("exact")) == "z" * 100
    assert "larger than max_bytes" in failure(backend_for(server, max_bytes=99), "exact")


def test_connection_refused_is_a_failure() -> None:
    """Nothing listening: a failure that says so, at once."""
    backend = make_backend({"type": "http", "url": f"http://127.0.0.1:{free_port()}/{{user}}"})
    started = time.monotonic()
    assert "cannot connect: Connection refused" in failure(backend, "alice")
    assert time.monotonic() - started < 1


def test_garbage_response_is_a_failure() -> None:
    """A server that does not speak HTTP: a failure, not a hang or a crash."""
    import socket
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def reply() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=reply)
        thread.start()
        port = listener.getsockname()[1]
        backend = make_backend({"type": "http", "url": f"http://127.0.0.1:{port}/{{user}}"})
        assert "not an HTTP/1.x response" in failure(backend, "alice")
        thread.join(5)


# -- TLS ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    directory = tmp_path_factory.mktemp("ca")
    directory.chmod(0o755)
    authority = TestCA(directory)
    for path in directory.iterdir():
        path.chmod(0o644)
    return authority


@pytest.fixture
def tls_server(ca: TestCA) -> Iterator[StatusServer]:
    with StatusServer(dict(ROUTES), tls=ca.server_context()) as running:
        yield running


def test_https_with_the_test_ca(tls_server: StatusServer, ca: TestCA) -> None:
    """HTTPS with a certificate from a CA given as ``ca_file``: verified, answered, by IP
    address and by host name."""
    backend = backend_for(tls_server, ca_file=str(ca.ca_cert))
    assert backend.lookup(Query("alice")) == "Alice is in"
    by_name = make_backend({"type": "http", "ca_file": str(ca.ca_cert),
                            "url": tls_server.url("/status/{user}", host="localhost")})
    assert by_name.lookup(Query("bob")) == "Bob is away"


def test_https_verifies_by_default(tls_server: StatusServer) -> None:
    """Without ca_file the system's CAs are trusted, and they do not know the test CA: a
    failure naming the certificate problem."""
    message = failure(backend_for(tls_server), "alice")
    assert "TLS certificate not accepted: unable to get local issuer certificate" in message


def test_https_checks_the_host_name(ca: TestCA, tmp_path: Path) -> None:
    """A valid certificate for another name is refused."""
    cert, key = ca.issue("other", ("other.example",), ())
    with StatusServer(dict(ROUTES), tls=ca.server_context(cert, key)) as other:
        message = failure(backend_for(other, ca_file=str(ca.ca_cert)), "alice")
    assert "TLS certificate not accepted: IP address mismatch" in message


def test_tls_verify_off(tls_server: StatusServer) -> None:
    """``tls_verify = false`` accepts any certificate (the admin's explicit choice)."""
    assert backend_for(tls_server, tls_verify=False).lookup(Query("alice")) == "Alice is in"


def test_plain_http_to_a_tls_port_fails(tls_server: StatusServer) -> None:
    """Speaking plain HTTP to a TLS server: a failure, not a hang."""
    url = tls_server.url("/status/{user}").replace("https:", "http:")
    backend = make_backend({"type": "http", "url": url, "timeout": 2.0})
    started = time.monotonic()
    failure(backend, "alice")
    assert time.monotonic() - started < 2.5


def test_redirect_from_https_to_http_is_refused(tls_server: StatusServer, ca: TestCA,
                                                server: StatusServer) -> None:
    """A redirect may not downgrade https to http (headers and answer would travel in
    clear)."""
    tls_server.routes["/status/down"] = lambda h: h.redirect(server.url("/status/alice"))
    message = failure(backend_for(tls_server, ca_file=str(ca.ca_cert)), "down")
    assert "redirect from https to http refused" in message


def test_https_through_the_handler(tls_server: StatusServer, ca: TestCA) -> None:
    """End to end over TLS: the per-connection handler on a socket answers from an HTTPS
    service with the test CA."""
    with public_dir() as directory:
        config = write_config(directory / "fingerd.toml", [
            {"type": "http", "url": tls_server.url("/status/{user}"),
             "ca_file": str(ca.ca_cert)}])
        reply = run_handler(config, b"alice\r\n")
        assert reply.data == b"Alice is in\r\n", reply.log
        reply = run_handler(config, b"e500\r\n")
        assert reply.data == b"Finger service unavailable\r\n"
        assert "/status/e500: HTTP 500 Internal Server Error" in reply.log


# -- DNS, in a private network namespace ----------------------------------------------------------

DNS_SCRIPT = r"""
import json, os, socket, subprocess, sys, time
config, out = sys.argv[1], sys.argv[2]
results = {}
def query(name, resolv):
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fingerd", "query", "--config", config, "alice"],
                          capture_output=True, timeout=60)
    results[name] = {"reply": proc.stdout.decode(), "log": proc.stderr.decode(),
                     "seconds": time.monotonic() - started}
    subprocess.run(["umount", "/etc/resolv.conf"], check=True)
# No network at all: the name server is unreachable, the resolver fails at once.
query("unreachable", os.path.join(os.path.dirname(config), "resolv-unreachable"))
# A name server on loopback that never answers: the resolver would wait 2 x 5 s.
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 53))
query("silent", os.path.join(os.path.dirname(config), "resolv-silent"))
json.dump(results, open(out, "w"))
"""


@pytest.fixture(scope="module")
def dns_results() -> Iterator[dict[str, dict[str, object]]]:
    needs_root("DNS failures without touching the network: a private network namespace")
    with public_dir() as directory:
        (directory / "resolv-unreachable").write_text("nameserver 192.0.2.1\n")
        (directory / "resolv-silent").write_text(
            "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
        config = write_config(directory / "fingerd.toml", [
            {"type": "http", "url": "http://fingerd-test.invalid/{user}", "timeout": 1.0},
            {"type": "static", "users": {"alice": "fallback"}}])
        out = directory / "out.json"
        subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--",
                        PYTHON, "-c", DNS_SCRIPT, str(config), str(out)],
                       check=True, env=child_env(), timeout=120)
        yield json.loads(out.read_text())


@pytest.mark.netns
def test_dns_failure_is_a_failure(dns_results: dict[str, dict[str, object]]) -> None:
    """A name that cannot be resolved: logged ("cannot resolve"), the next backend answers."""
    result = dns_results["unreachable"]
    assert result["reply"] == "fallback\r\n"
    assert "cannot resolve 'fingerd-test.invalid'" in str(result["log"])


@pytest.mark.netns
def test_silent_resolver_does_not_outlast_the_timeout(
        dns_results: dict[str, dict[str, object]]) -> None:
    """A name server that never answers (the C resolver would wait 10 s) is cut off at the
    backend's timeout (1 s): the next backend answers within about that."""
    result = dns_results["silent"]
    assert result["reply"] == "fallback\r\n"
    assert "no answer within 1 s" in str(result["log"])
    assert float(result["seconds"]) < 4  # 1 s, plus starting Python


# -- the per-connection cost, measured on the product as installed --------------------------------
#
# Debian's /usr/bin/python3 -I with the installed wheel first on sys.path (backend_fixtures:
# installed_site, run_installed): never the test venv, whose editable install's .pth imports `re`
# at start-up and so hid `re` coming back with every lookup.

IMPORT_PROBE = textwrap.dedent("""
    import sys, fingerd.handler
    before = set(sys.modules)
    from fingerd.backends.http import HttpBackend
    from fingerd.config import Options
    from fingerd.protocol import Query
    table = {"url": sys.argv[1] + "/status/{user}"}
    if sys.argv[2]:
        table["ca_file"] = sys.argv[2]
    answer = HttpBackend(Options(table, "x", "b")).lookup(Query(sys.argv[3]))
    assert answer is not None, answer
    print(" ".join(sorted(set(sys.modules) - before)))
""")
CLOSURE_PROBE = textwrap.dedent("""
    import sys, fingerd.handler
    before = set(sys.modules)
    exec(sys.argv[1])
    print(" ".join(sorted(set(sys.modules) - before)))
""")
# Never on the http:// path: each costs milliseconds on every connection (README, `http`).
HEAVY = {"re", "encodings.idna", "unicodedata", "stringprep", "enum", "functools", "http",
         "http.client", "urllib", "urllib.request", "urllib.parse", "email", "socket",
         "selectors", "logging", "subprocess", "ssl", "json"}
# Never on any path: an HTTP library, logging, or IDNA for an ASCII host name.
NEVER = {"encodings.idna", "http.client", "urllib", "urllib.request", "logging", "email"}


def lookup_imports(url: str, user: str = "alice", ca_file: str = "") -> set[str]:
    """The modules an http backend and one lookup import after the handler's own."""
    proc = run_installed(IMPORT_PROBE, url, ca_file, user)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def closure(code: str) -> set[str]:
    """The modules ``code`` imports after the handler's own (what a module needs)."""
    proc = run_installed(CLOSURE_PROBE, code)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def not_ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m != "fingerd" and not m.startswith("fingerd.")}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_http_lookup_imports_nothing_heavy(server: StatusServer, host: str) -> None:
    """An http:// text/plain lookup, by address or by host name, imports only fingerd's
    backend and client and the built-in _socket: no re, encodings.idna (a str host name
    makes CPython's resolver import it, and re with it), enum, socket, http.client, urllib,
    logging, ssl or json."""
    new = lookup_imports(server.url("", host=host))
    assert new & HEAVY == set(), sorted(new & HEAVY)
    assert not_ours(new) <= {"_socket"}, sorted(new)
    assert {"fingerd.backends.http", "fingerd.httpclient"} <= new


def test_json_lookup_imports_only_json(server: StatusServer) -> None:
    """A JSON body costs the json module and what it needs (json.decoder imports re), and
    nothing else heavy: no IDNA, no HTTP library, no ssl."""
    new = lookup_imports(server.url(""), "bob")
    assert "json" in new
    assert new & NEVER == set() and "ssl" not in new, sorted(new & (NEVER | {"ssl"}))
    needed = closure("import json; b'{}'.decode('utf-8-sig')") | {"_socket"}
    assert not_ours(new) <= needed, sorted(not_ours(new) - needed)


def test_https_lookup_imports_ssl_but_no_http_library(tls_server: StatusServer,
                                                      ca: TestCA) -> None:
    """An https:// lookup costs the ssl module and what ssl itself imports (socket,
    selectors, enum, re, base64, ...: README.md lists them) and fingerd/_tls.py, but no
    IDNA codec (the host name goes to TLS as ASCII bytes) and no HTTP library."""
    for host in ("127.0.0.1", "localhost"):
        new = lookup_imports(tls_server.url("", host=host), ca_file=str(ca.ca_cert))
        assert {"ssl", "fingerd._tls"} <= new
        assert new & NEVER == set() and "json" not in new, sorted(new & (NEVER | {"json"}))
        needed = closure("import ssl") | {"_socket"}
        assert not_ours(new) <= needed, sorted(not_ours(new) - needed)


HANDLER = "from fingerd.cli import run\nrun()\n"  # bin/fingerd, the installed launcher


def test_handler_answers_from_http_without_heavy_imports(server: StatusServer) -> None:
    """The per-connection path as fingerd@.service runs it: the installed package on Debian's
    `python3 -I` (bin/fingerd's code), a socket on stdin and stdout, the config from the
    cache directory (the second run: the first parses the TOML and fills the cache). The
    client gets the answer from the web service, and nothing heavy was imported on the way
    (`-X importtime` lists every import)."""
    with public_dir() as directory:
        config = write_config(directory / "fingerd.toml", [
            {"type": "http", "url": server.url("/status/{user}", host="localhost")}])
        cache = directory / "cache"
        cache.mkdir()
        for _ in range(2):
            ours, theirs = socket.socketpair()
            with ours, theirs:
                ours.sendall(b"alice\r\n")
                proc = run_installed(HANDLER, "--config", str(config),
                                     env={"CACHE_DIRECTORY": str(cache)},
                                     flags=["-X", "importtime"],
                                     stdin=theirs.fileno(), stdout=theirs.fileno())
                theirs.close()
                reply = recv_all(ours, 65536, 10)
            assert proc.returncode == 0, proc.stderr
            assert reply == b"Alice is in\r\n", proc.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and "self [us]" not in line}
    assert {"fingerd.handler", "fingerd.httpclient"} <= modules
    assert modules & HEAVY == set(), sorted(modules & HEAVY)


def test_module_is_not_shadowing_the_standard_library() -> None:
    """fingerd/backends/http.py does not hide the standard library's ``http`` package."""
    code = "import fingerd.backends.http, http.client; print(http.client.__file__)"
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO)})
    assert "/fingerd/" not in proc.stdout and proc.stdout.strip().endswith("http/client.py")


def test_documented_defaults() -> None:
    """timeout 3 s, max_bytes 64 KiB, TLS verified, JSON field "status" (README, issue 3)."""
    backend = make_backend({"type": "http", "url": "http://127.0.0.1:9/{user}"})
    assert (backend.timeout, backend.max_bytes) == (3.0, 65536)  # type: ignore[attr-defined]
    assert backend.tls_verify is True  # type: ignore[attr-defined]
    assert backend.json_field == "status"  # type: ignore[attr-defined]
