"""A small HTTP/1.1 client with one entry point: ``get(url, deadline, headers, max_bytes)``.

Hand-written, over the interpreter's built-in ``_socket``, because the per-connection handler
(one Python process per finger query) pays for every module it imports, and the standard
library's clients cost 35 to 50 times what this module and the backend cost together.
``/usr/bin/python3 bench/importcost.py --runs 31 --realtime`` (``-I -X importtime``, minimum
of 31 runs; README.md, the `http` backend): ``urllib.request`` 51 ms, ``http.client`` 35 ms,
``socket`` 7.3 ms, ``_socket`` 0.2 ms (built in); the backend, this module and one http://
lookup 1.0 ms. ``ssl`` (17 ms) is imported only for an https URL (fingerd/_tls.py). A host
name goes to the resolver and to TLS as ASCII bytes: as a ``str`` CPython encodes it with the
``idna`` codec, which imports ``re``, ``enum``, ``unicodedata`` and more (7.9 ms), on every
lookup.

The contract, whatever the server sends (tests/test_httpclient.py fuzzes it against a hostile
server on loopback):

- ``get`` returns a :class:`Response` or raises :class:`HttpError` (no usable response; the
  message names the URL, without its query string, and the reason) or ``TimeoutError`` (the
  deadline passed). A bad argument (URL, header) is a ``ValueError``.
- It returns by ``deadline`` (a ``time.monotonic()`` value): every wait (DNS, connect, TLS,
  each read and write) is bounded by the time left, across redirects.
- From one connection it reads at most :data:`HEAD_BYTES` of status lines, headers, chunk
  framing and trailers, plus ``max_bytes + 1`` of body (the extra byte proves a body that ends
  at the close too long); a body is read only for a 2xx answer.
- Up to :data:`MAX_REDIRECTS` redirects (301, 302, 303, 307, 308) are followed with a new GET:
  only to http or https, never from https down to http, and only to where ``url`` points (the
  same host and port, or that host's https port) unless ``redirect_hosts`` names the target
  (``host`` or ``host:port``): a hostile upstream cannot make fingerd fetch from loopback or
  the internal network and hand the page to a finger client. ``headers`` may be credentials:
  they go only to the scheme, host and port of ``url``, never to where a redirect leads.
- Bodies come as the server framed them (Content-Length, chunked, or up to the close); any
  Transfer-Encoding but exactly ``chunked``, and any Content-Encoding, is an HttpError: a
  compressed body is never returned as if it were text.

About 500 lines, one file on purpose: the URL, the reader and the resolver are only ever used
together, and each further module on the http:// path would cost every connection ~0.15 ms
(an empty module, ``-X importtime``, median of 21 runs).
"""

import _socket
import _thread
import time

from fingerd import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Collection, Mapping

MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_BYTES = 64 * 1024  # everything but the body that one response may take
_MAX_LINE = 8192
_MAX_FIELDS = 100
_MAX_INTERIM = 10  # 1xx responses before the real one
_RECV = 65536
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SCHEME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_OURS = ("host", "content-length", "transfer-encoding", "connection")  # set by get() itself


class HttpError(Exception):
    """The server gave no usable response; the message says what and where."""


def _digits(text: str, most: int) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²``, which ``int`` refuses), and not
    more than ``most`` of them after leading zeros."""
    return text.isascii() and text.isdigit() and len(text.lstrip("0")) <= most


class URL:
    """An http or https URL, split into what a request needs. Hosts are ASCII: a name with
    other letters must be given in its IDNA form (``xn--...``)."""

    __slots__ = ("host", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int, target: str) -> None:
        self.scheme, self.host, self.port, self.target = scheme, host, port, target

    @classmethod
    def parse(cls, url: str) -> "URL":
        """Split ``scheme://host[:port]/path?query`` (raises ValueError with the reason)."""
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in DEFAULT_PORTS:
            raise ValueError(f"not an http or https URL: {_short(url)!r}")
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, target = rest[:end], rest[end:].partition("#")[0]
        if "@" in authority:
            raise ValueError("user:password@ in the URL is not supported; use headers")
        if authority.startswith("["):  # an IPv6 literal
            host, bracket, port_text = authority[1:].partition("]")
            if not bracket or (port_text and not port_text.startswith(":")):
                raise ValueError(f"bad host in {_short(url)!r}")
            port_text = port_text[1:]
        else:
            host, _, port_text = authority.partition(":")
        if not host or not all(c.isascii() and (c.isalnum() or c in ".-_:%") for c in host):
            hint = "" if host.isascii() else " (write the name in its xn-- form)"
            raise ValueError(f"bad host in {_short(url)!r}{hint}")
        if port_text and not (_digits(port_text, 5) and 0 < int(port_text) < 65536):
            raise ValueError(f"bad port in {_short(url)!r}")
        port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
        return cls(scheme, host.lower(), port, _encode_target(target))

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header()}{self.target}"

    def for_log(self) -> str:
        """The URL without its query string, which may hold a token."""
        text = str(self)
        return text.split("?", 1)[0] + ("?..." if "?" in text else "")

    def join(self, location: str) -> "URL":
        """Resolve a redirect's Location against this URL (RFC 3986 §5.2, simplified)."""
        location = location.strip()
        colon = location.find(":")
        if colon > 0 and location[0].isalpha() and all(c in _SCHEME for c in location[:colon]):
            scheme = location[:colon].lower()
            if scheme not in DEFAULT_PORTS:
                raise HttpError(f"{self.for_log()}: redirect to a {_short(scheme)}: URL refused")
            return URL.parse(location)
        if location.startswith("//"):
            return URL.parse(f"{self.scheme}:{location}")
        base = f"{self.scheme}://{self.host_header()}"
        path = self.target.split("?", 1)[0]
        if location.startswith("/"):
            return URL.parse(base + location)
        if location.startswith("?"):
            return URL.parse(base + path + location)
        if not location or location.startswith("#"):
            return self
        return URL.parse(base + path[:path.rfind("/") + 1] + location)


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


def _encode_target(target: str) -> str:
    """A request target safe to send: blanks and non-ASCII encoded, controls refused."""
    out = [] if target.startswith("/") else ["/"]
    for c in target:
        if c < " " or c == "\x7f":
            raise ValueError("control character in URL")
        out.append("".join(f"%{b:02X}" for b in c.encode("utf-8"))
                   if c == " " or not c.isascii() else c)
    return "".join(out)


def check_header(name: str, value: str) -> None:
    """Raise ValueError (the reason) unless ``name: value`` is a header a caller may send."""
    if not name or not all(c in _TOKEN for c in name):
        raise ValueError("not a valid HTTP header name")
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise ValueError("control characters are not allowed in a header value")
    if name.lower() in _OURS:
        raise ValueError("set by fingerd itself")


class Response:
    """The final response: status, reason, headers (lower-case names, repeated fields joined
    with ", "), the body (empty unless 2xx), and the URL it came from."""

    __slots__ = ("body", "headers", "reason", "status", "url")

    def __init__(self, url: "URL", status: int, reason: str, headers: dict[str, str],
                 body: bytes) -> None:
        self.url, self.status, self.reason, self.headers, self.body = (
            url, status, reason, headers, body)


class TLS:
    """How https servers are checked. The context is made on first use, so that an http
    lookup never imports ``ssl``."""

    __slots__ = ("_context", "ca_file", "verify")

    def __init__(self, verify: bool = True, ca_file: str = "") -> None:
        self.verify, self.ca_file = verify, ca_file
        self._context: ssl.SSLContext | None = None

    def context(self) -> "ssl.SSLContext":
        if self._context is None:
            from fingerd._tls import client_context

            self._context = client_context(self.verify, self.ca_file)
        return self._context


_DEFAULT_TLS = TLS()


def get(url: "URL | str", deadline: float, headers: "Mapping[str, str] | None" = None,
        max_bytes: int = 65536, *, accept: str = "*/*", tls: "TLS | None" = None,
        redirect_hosts: "Collection[str]" = (),
        socket_type: "Callable[[int, int, int], _socket.socket]" = _socket.socket) -> "Response":
    """``GET url``, following redirects, all by ``deadline`` (see the module's docstring).

    ``socket_type`` makes the sockets (a subclass of ``_socket.socket``, e.g. one that counts
    what it receives).
    """
    url = URL.parse(url) if isinstance(url, str) else url
    extra = dict(headers or {})
    for name, value in extra.items():
        check_header(name, value)
    origin = url.origin
    for redirects in range(MAX_REDIRECTS + 1):
        conn = None
        try:
            conn = _connect(url, deadline, tls or _DEFAULT_TLS, socket_type)
            conn.send(_request(url, accept, extra if url.origin == origin else {}))
            status, reason, fields = _read_head(conn)
            if status not in REDIRECTS:
                body = _read_body(conn, status, fields, max_bytes)
                return Response(url, status, reason, fields, body)
            target = _redirect(url, status, fields, redirects)
            if not _may_follow(origin, target, redirect_hosts):
                raise HttpError(f"{url.for_log()}: redirect to another host "
                                f"({target.host_header()}) refused (redirect_hosts)")
            url = target
        except TimeoutError:
            raise
        except OSError as e:  # reset, refused, broken pipe, TLS alerts after the handshake
            raise HttpError(f"{url.for_log()}: {getattr(e, 'reason', None) or e.strerror or e}") \
                from None
        finally:
            if conn is not None:
                conn.close()
    raise AssertionError("unreachable")


def _may_follow(origin: tuple[str, str, int], target: "URL",
                redirect_hosts: "Collection[str]") -> bool:
    """A redirect stays where the configured URL points: its host and port, or the https port
    of the same host; or it goes where the admin allowed (``host``, ``host:port``)."""
    _scheme, host, port = origin
    if target.host == host and (target.port == port or (
            target.scheme == "https" and target.port == DEFAULT_PORTS["https"])):
        return True
    return target.host in redirect_hosts or target.host_header() in redirect_hosts \
        or f"{target.host}:{target.port}" in redirect_hosts


def _redirect(url: "URL", status: int, fields: dict[str, str], redirects: int) -> "URL":
    location = fields.get("location")
    if location is None:
        raise HttpError(f"{url.for_log()}: HTTP {status} without Location")
    if redirects == MAX_REDIRECTS:
        raise HttpError(f"{url.for_log()}: more than {MAX_REDIRECTS} redirects")
    try:
        target = url.join(location)
    except ValueError as e:
        raise HttpError(f"{url.for_log()}: bad redirect: {e}") from None
    if url.scheme == "https" and target.scheme == "http":
        raise HttpError(f"{url.for_log()}: redirect from https to http refused")
    return target


def _request(url: "URL", accept: str, extra: dict[str, str]) -> bytes:
    fields = {"Host": url.host_header(), "User-Agent": f"fingerd/{__version__}",
              "Accept": accept, "Accept-Encoding": "identity", "Connection": "close"}
    replaced = {name.lower() for name in extra}
    lines = [f"GET {url.target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items()
              if name.lower() not in replaced]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class _Connection:
    """One socket, read through a buffer; every wait bounded by the deadline, every read by
    ``limit`` (bytes this connection may receive in all) and then by ``too_big``."""

    def __init__(self, sock: "_socket.socket | ssl.SSLSocket", url: "URL", deadline: float) -> None:
        self.sock, self.url, self.deadline = sock, url, deadline
        self.buffer = bytearray()
        self.eof = False
        self.received, self.limit = 0, HEAD_BYTES
        self.too_big = f"response head larger than {HEAD_BYTES} bytes"

    def fail(self, reason: str) -> "HttpError":
        return HttpError(f"{self.url.for_log()}: {reason}")

    def close(self) -> None:
        try:  # noqa: SIM105 (contextlib costs an import per connection)
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self.sock.settimeout(_left(self.deadline, self.url))
            view = view[self.sock.send(view):]

    def fill(self, want: int = _RECV) -> bool:
        """Receive up to ``want`` more bytes into the buffer; False at end of stream."""
        if self.eof:
            return False
        want = min(want, _RECV, self.limit - self.received)
        if want <= 0:
            raise self.fail(self.too_big)
        self.sock.settimeout(_left(self.deadline, self.url))
        chunk = self.sock.recv(want)
        if not chunk:
            self.eof = True
            return False
        self.received += len(chunk)
        self.buffer += chunk
        return True

    def readline(self) -> bytes:
        """One line with its LF, or what came before the end of the stream."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start, _MAX_LINE)
            if end >= 0:
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                return line
            if len(self.buffer) >= _MAX_LINE:
                raise self.fail(f"header line longer than {_MAX_LINE} bytes")
            start = len(self.buffer)
            if not self.fill():
                line = bytes(self.buffer)
                self.buffer.clear()
                return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill(size - len(self.buffer)):
                raise self.fail("connection closed in the middle of the body")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_end(self, limit: int) -> bytes:
        """Everything up to the close, or more than ``limit`` bytes (the caller checks)."""
        while len(self.buffer) <= limit and self.fill(limit + 1 - len(self.buffer)):
            pass
        return bytes(self.buffer)


def _left(deadline: float, url: "URL") -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{url.for_log()}: deadline passed")
    return left


def _read_head(conn: "_Connection") -> tuple[int, str, dict[str, str]]:
    """Status and headers of the final response, after up to _MAX_INTERIM 1xx ones."""
    for _ in range(_MAX_INTERIM + 1):
        line = conn.readline()
        if not line:
            raise conn.fail("connection closed without a response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not (version.startswith("HTTP/1.") and len(code) == 3 and _digits(code, 3)
                and 100 <= int(code) < 600):
            raise conn.fail(f"not an HTTP/1.x response: {line[:80]!r}")
        fields = _read_fields(conn)
        if not 100 <= int(code) < 200:
            return int(code), reason.strip(), fields
    raise conn.fail("too many interim responses")


def _read_fields(conn: "_Connection") -> dict[str, str]:
    """Header (or trailer) fields up to the blank line; names in lower case."""
    fields: dict[str, str] = {}
    name = ""
    for _ in range(_MAX_FIELDS + 1):
        line = conn.readline()
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            if not line.endswith(b"\n"):
                raise conn.fail("connection closed in the headers")
            return fields
        if text[0] in " \t" and name:  # obsolete line folding
            fields[name] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not name or not all(c in _TOKEN for c in name):
            raise conn.fail(f"bad header line {line[:80]!r}")
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    raise conn.fail(f"more than {_MAX_FIELDS} header lines")


def _read_body(conn: "_Connection", status: int, fields: dict[str, str], limit: int) -> bytes:
    if not 200 <= status < 300 or status in (204, 205):
        return b""  # nothing here uses an error page: not reading it saves time
    coding = fields.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise conn.fail(f"Content-Encoding {coding!r} not supported")
    conn.limit = HEAD_BYTES + limit + 1
    conn.too_big = f"body larger than max_bytes = {limit} (with its chunk framing)"
    too_big = f"body larger than max_bytes = {limit}"
    transfer = fields.get("transfer-encoding")
    if transfer is not None:
        if transfer.strip().lower() != "chunked":  # gzip, chunked: bytes we cannot read
            raise conn.fail(f"Transfer-Encoding {_short(transfer)!r} not supported")
        return _read_chunked(conn, limit, too_big)
    length = fields.get("content-length")
    if length is not None:
        values = {value.strip() for value in length.split(",")}
        value = values.pop()
        if values or not _digits(value, 12):
            raise conn.fail(f"bad Content-Length {_short(length)!r}")
        if int(value) > limit:
            raise conn.fail(f"{too_big} (Content-Length {int(value)})")
        return conn.read_exactly(int(value))
    body = conn.read_to_end(limit)
    if len(body) > limit:
        raise conn.fail(too_big)
    return body


def _read_chunked(conn: "_Connection", limit: int, too_big: str) -> bytes:
    body = bytearray()
    while True:
        line = conn.readline()
        if not line.endswith(b"\n"):
            raise conn.fail("connection closed in the middle of the body")
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not size_text or not all(c in _HEX for c in size_text) \
                or len(size_text.lstrip(b"0")) > 15:
            raise conn.fail(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            _read_fields(conn)  # the trailer
            return bytes(body)
        if len(body) + size > limit:
            raise conn.fail(too_big)
        body += conn.read_exactly(size)
        if conn.readline() not in (b"\r\n", b"\n"):
            raise conn.fail("no line end after a chunk")


def _connect(url: "URL", deadline: float, tls: "TLS",
             socket_type: "Callable[[int, int, int], _socket.socket]") -> "_Connection":
    context = tls.context() if url.scheme == "https" else None
    errors = []
    for family, kind, proto, address in _resolve(url, deadline):
        sock = socket_type(family, kind, proto)
        try:
            sock.settimeout(_left(deadline, url))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            errors.append(e.strerror or str(e))
            continue
        if context is None:
            return _Connection(sock, url, deadline)
        from fingerd._tls import wrap

        return _Connection(wrap(context, sock, url, deadline), url, deadline)
    raise HttpError(f"{url.for_log()}: cannot connect: "
                    f"{'; '.join(dict.fromkeys(errors)) or 'no address'}")


Address = tuple[int, int, int, tuple[object, ...]]  # family, type, protocol, sockaddr


# Name lookups in their threads at most, in all: the long-running front ends call this from
# many threads, and a resolver that does not answer would otherwise leave one stuck thread per
# lookup behind.
MAX_RESOLVERS = 32
_resolving = 0
_resolving_lock = _thread.allocate_lock()


def _resolve(url: "URL", deadline: float) -> "list[Address]":
    """getaddrinfo(), within the deadline: the C resolver has no timeout of its own.

    The host goes as ASCII bytes: a ``str`` would be encoded with the ``idna`` codec, which
    imports ``re``. A name is resolved in a helper thread (``_thread``: built in) that is
    abandoned if it does not answer in time.
    """
    host = url.host.encode("ascii")

    def lookup() -> "list[Address]":
        found = _socket.getaddrinfo(host, url.port, 0, _socket.SOCK_STREAM)
        return [(family, kind, proto, address) for family, kind, proto, _, address in found]

    if _is_address(url.host):
        return lookup()
    global _resolving
    with _resolving_lock:
        if _resolving >= MAX_RESOLVERS:  # a resolver that hangs: no new thread per lookup
            raise HttpError(f"cannot resolve {url.host!r}: {_resolving} name lookups already "
                            "waiting for the resolver")
        _resolving += 1
    result: list[object] = []
    done = _thread.allocate_lock()
    done.acquire()

    def work() -> None:
        global _resolving
        try:
            result.append(lookup())
        except BaseException as e:  # handed to the waiting thread
            result.append(e)
        finally:
            with _resolving_lock:
                _resolving -= 1
            done.release()

    _thread.start_new_thread(work, ())
    if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"{url.for_log()}: deadline passed")
    answer = result[0]
    if isinstance(answer, OSError):
        raise HttpError(f"cannot resolve {url.host!r}: {answer.strerror or answer}")
    if isinstance(answer, BaseException):
        raise answer
    assert isinstance(answer, list)
    return answer


def _is_address(host: str) -> bool:
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False
