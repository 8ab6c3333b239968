"""``type = "http"``: status read from a web service.

::

    [[backend]]
    type = "http"
    url = "https://status.example.org/finger/{user}"   # {user} is percent-encoded
    # timeout = 3.0          # seconds for everything: DNS, connect, TLS, request, response
    # max_bytes = 65536      # a longer body is a failure, not a truncated answer
    # tls_verify = true      # check the server's certificate and name
    # ca_file = "/etc/ssl/private-ca.pem"   # trust this CA instead of the system's
    # json_field = "status"  # the answer in a JSON body {"status": "..."}
    [backend.headers]        # sent with every request to the configured host
    Authorization = "Bearer 0123456789"

The tutorial's "status read from the web", with every way it can go wrong bounded:

- HTTP 404 means "does not know this user": the chain asks the next backend. A 2xx answer with
  a ``text/plain`` body (in its charset, UTF-8 by default) or a JSON object with a string field
  ``json_field`` is the answer. Anything else fails the lookup (the chain logs the reason and
  goes on): other statuses, other content types, timeouts, refused connections, DNS and TLS
  errors, bodies over ``max_bytes``, more than 3 redirects, a redirect to anything but
  http/https, or from https down to http. Configured headers go only to the configured
  scheme, host and port, never to a host a redirect leads to.
- One deadline covers the whole lookup, redirects included, so a server that sends one byte a
  second cannot stretch it.

The client is a small HTTP/1.1 client over the interpreter's built-in ``_socket``, because it
is by far the cheapest to import (every connection of the per-connection handler pays for
it; the figures are in README.md, under the `http` backend): ``http.client`` and
``urllib.request`` cost ~25 ms, ``_socket`` ~0.2 ms. ``ssl`` (~14 ms) is imported only for an
https URL, ``json`` only for a JSON body. Certificates are looked up in the hashed system CA
directory, which OpenSSL reads lazily; ``ssl.create_default_context()`` parses the whole CA
bundle (~25 ms).
"""

from __future__ import annotations

import _socket
import time

from fingerd import __version__
from fingerd.backend import Backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

    from fingerd.config import Options
    from fingerd.protocol import Query

MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_HEADER_LINE = 8192
_MAX_HEADER_BYTES = 64 * 1024
_MAX_HEADERS = 100
_MAX_INTERIM = 10  # 1xx responses before the real one
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_PLACEHOLDER = "{user}"


class HttpError(Exception):
    """The web service gave no usable answer; the message says what and where."""


class URL:
    """An http or https URL, split into what a request needs."""

    __slots__ = ("host", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int, target: str) -> None:
        self.scheme, self.host, self.port, self.target = scheme, host, port, target

    @classmethod
    def parse(cls, url: str) -> URL:
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
            raise ValueError(f"bad host in {_short(url)!r}")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad port in {_short(url)!r}")
            port = int(port_text)
        else:
            port = DEFAULT_PORTS[scheme]
        if not target.startswith("/"):
            target = "/" + target
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

    def join(self, location: str) -> URL:
        """Resolve a redirect's Location against this URL (RFC 3986 §5.2, simplified)."""
        location = location.strip()
        colon = location.find(":")
        if colon > 0 and all(c in _SCHEME_CHARS for c in location[:colon]) \
                and location[0].isalpha():
            scheme = location[:colon].lower()
            if scheme not in DEFAULT_PORTS:
                raise HttpError(f"{self.for_log()}: redirect to a {scheme}: URL refused")
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


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (so ``/`` too)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def _encode_target(target: str) -> str:
    """A request target safe to send: blanks and non-ASCII encoded, controls refused."""
    out = []
    for c in target:
        if c < " " or c == "\x7f":
            raise ValueError("control character in URL")
        if c == " " or not c.isascii():
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


class _Response:
    """Status line and headers of one response; the body is read on demand."""

    def __init__(self, url: URL, status: int, reason: str, headers: dict[str, str]) -> None:
        self.url, self.status, self.reason, self.headers = url, status, reason, headers


class _Connection:
    """One socket, read through a buffer, every operation bounded by the lookup's deadline."""

    def __init__(self, sock: _socket.socket | ssl.SSLSocket, url: URL, deadline: float) -> None:
        self.sock, self.url, self.deadline = sock, url, deadline
        self.buffer = b""
        self.eof = False

    def close(self) -> None:
        try:  # noqa: SIM105 (contextlib costs an import per connection)
            self.sock.close()
        except OSError:
            pass

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self.sock.settimeout(self._left())
            view = view[self.sock.send(view):]

    def _fill(self) -> bool:
        """Read more into the buffer; False at end of stream."""
        if self.eof:
            return False
        self.sock.settimeout(self._left())
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def readline(self, limit: int) -> bytes:
        """One line with its LF (or what came before EOF); HttpError if over ``limit``."""
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0:
                line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
                return line
            if len(self.buffer) >= limit:
                raise HttpError(f"{self.url.for_log()}: header line longer than {limit} bytes")
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise HttpError(f"{self.url.for_log()}: connection closed in the middle of "
                                "the body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_to_end(self, limit: int) -> bytes:
        while len(self.buffer) <= limit and self._fill():
            pass
        return self.buffer


class HttpBackend(Backend):
    """Status from ``GET url`` with the user name filled in."""

    blocking = True  # network I/O
    needs_network = True

    def __init__(self, options: Options) -> None:
        self.template = options.string("url")
        if _PLACEHOLDER not in self.template:
            raise options.error("url", f"must contain {_PLACEHOLDER} (where the user name "
                                f"goes), got {self.template!r}")
        try:
            parsed = URL.parse(self.template.replace(_PLACEHOLDER, "user"))
        except ValueError as e:
            raise options.error("url", str(e)) from None
        prefix_end = self.template.find("://") + 3
        authority_end = min((i for i in (self.template.find(c, prefix_end) for c in "/?#")
                             if i >= 0), default=len(self.template))
        if _PLACEHOLDER in self.template[:authority_end]:
            raise options.error("url", f"{_PLACEHOLDER} must be in the path or query, not in "
                                "the host: the client must not choose where we connect")
        self.origin = parsed.origin
        self.headers = options.strings("headers", {})
        for name, value in self.headers.items():
            if not name or not all(c in _TOKEN for c in name):
                raise options.error(f"headers.{name}", "not a valid HTTP header name")
            if any((c < " " and c != "\t") or c == "\x7f" for c in value):
                raise options.error(f"headers.{name}", "control characters are not allowed "
                                    "in a header value")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise options.error(f"headers.{name}", "set by fingerd itself")
        self.timeout = options.number("timeout", 3.0)
        self.max_bytes = options.integer("max_bytes", 65536, minimum=1,
                                         maximum=16 * 1024 * 1024)
        self.tls_verify = options.boolean("tls_verify", True)
        self.ca_file = options.string("ca_file", "")
        if self.ca_file and not self.tls_verify:
            raise options.error("ca_file", "has no effect with tls_verify = false")
        if self.ca_file:
            import os

            if not os.access(self.ca_file, os.R_OK):
                raise options.error("ca_file", f"cannot read {self.ca_file!r}")
        self.json_field = options.string("json_field", "status")
        if not self.json_field:
            raise options.error("json_field", "must not be empty")
        self._tls: ssl.SSLContext | None = None

    # -- the contract -----------------------------------------------------------------------

    def lookup(self, query: Query) -> str | None:
        user = query.user
        if user in (".", ".."):  # dot segments: servers resolve them before routing
            return None
        url = URL.parse(self.template.replace(_PLACEHOLDER, quote(user)))
        deadline = time.monotonic() + self.timeout
        try:
            return self._get(url, deadline)
        except TimeoutError:
            raise TimeoutError(f"{url.for_log()}: no answer within {self.timeout:g} s") \
                from None

    # -- HTTP -------------------------------------------------------------------------------

    def _get(self, url: URL, deadline: float) -> str | None:
        for redirects in range(MAX_REDIRECTS + 1):
            conn = self._connect(url, deadline)
            try:
                conn.send(self._request(url))
                response = self._read_head(conn)
                status = response.status
                if status in REDIRECTS:
                    location = response.headers.get("location")
                    if location is None:
                        raise HttpError(f"{url.for_log()}: HTTP {status} without Location")
                    if redirects == MAX_REDIRECTS:
                        raise HttpError(f"{url.for_log()}: more than {MAX_REDIRECTS} "
                                        "redirects")
                    try:
                        target = url.join(location)
                    except ValueError as e:
                        raise HttpError(f"{url.for_log()}: bad redirect: {e}") from None
                    if url.scheme == "https" and target.scheme == "http":
                        raise HttpError(f"{url.for_log()}: redirect from https to http "
                                        "refused")
                    url = target
                    continue
                if status == 404:
                    return None  # the service does not know this user
                if not 200 <= status < 300:
                    raise HttpError(f"{url.for_log()}: HTTP {status} {response.reason}".rstrip())
                return self._answer(response, self._read_body(conn, response))
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def _request(self, url: URL) -> bytes:
        lines = [f"GET {url.target} HTTP/1.1", f"Host: {url.host_header()}",
                 f"User-Agent: fingerd/{__version__}",
                 "Accept: text/plain, application/json;q=0.9", "Accept-Encoding: identity",
                 "Connection: close"]
        if url.origin == self.origin:
            lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def _connect(self, url: URL, deadline: float) -> _Connection:
        tls = (self._tls or self._tls_context()) if url.scheme == "https" else None
        addresses = _resolve(url.host, url.port, deadline)
        errors = []
        for family, kind, proto, address in addresses:
            sock = _socket.socket(family, kind, proto)
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                sock.connect(address)
            except TimeoutError:
                sock.close()
                raise
            except OSError as e:
                sock.close()
                errors.append(e.strerror or str(e))
                continue
            if tls is not None:
                return _Connection(_wrap_tls(tls, sock, url, deadline), url, deadline)
            return _Connection(sock, url, deadline)
        raise HttpError(f"{url.for_log()}: cannot connect: {'; '.join(dict.fromkeys(errors))}")

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and name
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        else:
            _load_system_cas(context)
        self._tls = context
        return context

    def _read_head(self, conn: _Connection) -> _Response:
        url = conn.url
        for _ in range(_MAX_INTERIM + 1):
            line = conn.readline(_MAX_HEADER_LINE)
            if not line:
                raise HttpError(f"{url.for_log()}: connection closed without a response")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise HttpError(f"{url.for_log()}: not an HTTP/1.x response: "
                                f"{line[:80]!r}")
            headers = self._read_headers(conn)
            status = int(code)
            if not 100 <= status < 200:
                return _Response(url, status, reason.strip(), headers)
        raise HttpError(f"{url.for_log()}: too many interim responses")

    @staticmethod
    def _read_headers(conn: _Connection) -> dict[str, str]:
        headers: dict[str, str] = {}
        total = 0
        name = ""
        for _ in range(_MAX_HEADERS + 1):
            line = conn.readline(_MAX_HEADER_LINE)
            total += len(line)
            if total > _MAX_HEADER_BYTES:
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                if not line.endswith(b"\n"):
                    raise HttpError(f"{conn.url.for_log()}: connection closed in the headers")
                return headers
            if text[0] in " \t" and name:  # obsolete line folding
                headers[name] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise HttpError(f"{conn.url.for_log()}: bad header line {line[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise HttpError(f"{conn.url.for_log()}: response headers too long")

    def _read_body(self, conn: _Connection, response: _Response) -> bytes:
        url, headers, limit = response.url, response.headers, self.max_bytes
        too_big = f"{url.for_log()}: body larger than max_bytes = {limit}"
        if response.status in (204, 205):
            return b""
        coding = headers.get("content-encoding", "identity").lower()
        if coding != "identity":
            raise HttpError(f"{url.for_log()}: Content-Encoding {coding!r} not supported")
        transfer = headers.get("transfer-encoding", "").lower()
        if transfer:
            if transfer.rsplit(",", 1)[-1].strip() != "chunked":
                raise HttpError(f"{url.for_log()}: Transfer-Encoding {transfer!r} not "
                                "supported")
            return self._read_chunked(conn, too_big)
        length = headers.get("content-length")
        if length is not None:
            length = length.split(",")[0].strip()
            if not length.isdigit():
                raise HttpError(f"{url.for_log()}: bad Content-Length {length!r}")
            if int(length) > limit:
                raise HttpError(f"{too_big} (Content-Length {length})")
            return conn.read_exactly(int(length))
        body = conn.read_to_end(limit)
        if len(body) > limit:
            raise HttpError(too_big)
        return body

    def _read_chunked(self, conn: _Connection, too_big: str) -> bytes:
        body = b""
        while True:
            size_line = conn.readline(_MAX_HEADER_LINE).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise HttpError(f"{conn.url.for_log()}: bad chunk size {size_line[:20]!r}") \
                    from None
            if size < 0:
                raise HttpError(f"{conn.url.for_log()}: bad chunk size")
            if size == 0:
                self._read_headers(conn)  # the trailer
                return body
            if len(body) + size > self.max_bytes:
                raise HttpError(too_big)
            body += conn.read_exactly(size)
            conn.readline(_MAX_HEADER_LINE)  # the CRLF after the chunk

    def _answer(self, response: _Response, body: bytes) -> str:
        url = response.url.for_log()
        ctype = response.headers.get("content-type", "")
        media, *params = (part.strip() for part in ctype.split(";"))
        media = media.lower()
        if not body and not media:
            return ""  # an empty answer: the user exists, with nothing to say
        if media == "text/plain":
            charset = "utf-8"
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "charset":
                    charset = value.strip().strip('"') or charset
            try:
                return body.decode(charset, "replace")
            except LookupError:
                raise HttpError(f"{url}: unknown charset {charset!r}") from None
        if media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json")):
            import json

            try:
                data = json.loads(body.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as e:
                raise HttpError(f"{url}: not valid JSON: {e}") from None
            field = data.get(self.json_field) if isinstance(data, dict) else None
            if not isinstance(field, str):
                raise HttpError(f"{url}: JSON body has no string field {self.json_field!r}")
            return field
        raise HttpError(f"{url}: Content-Type {ctype or '(none)'!r} not accepted (only "
                        "text/plain and JSON)")


def _wrap_tls(context: ssl.SSLContext, sock: _socket.socket, url: URL,
              deadline: float) -> ssl.SSLSocket:
    """TLS over a connected socket; the handshake (certificate and name check) happens here."""
    import ssl

    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        return context.wrap_socket(sock, server_hostname=url.host)  # type: ignore[arg-type]
    except ssl.SSLCertVerificationError as e:
        sock.close()
        raise HttpError(f"{url.for_log()}: TLS certificate not accepted: "
                        f"{e.verify_message or e.reason}") from None
    except ssl.SSLError as e:
        sock.close()
        raise HttpError(f"{url.for_log()}: TLS error: {e.reason or e}") from None
    except BaseException:
        sock.close()
        raise


def _load_system_cas(context: ssl.SSLContext) -> None:
    """Trust the system's CAs, as cheaply as possible.

    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` win, as in OpenSSL. Otherwise the hashed directory
    (/etc/ssl/certs on Debian, kept by update-ca-certificates) is used: OpenSSL reads from it
    only the CA a server's chain needs. The bundle file is the fallback where there is no
    such directory.
    """
    import os
    import ssl

    paths = ssl.get_default_verify_paths()
    cafile = os.environ.get(paths.openssl_cafile_env)
    capath = os.environ.get(paths.openssl_capath_env)
    if cafile or capath:
        context.load_verify_locations(cafile=cafile or None, capath=capath or None)
    elif paths.capath and os.path.isdir(paths.capath):
        context.load_verify_locations(capath=paths.capath)
    else:
        context.set_default_verify_paths()


def _is_address(host: str) -> bool:
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


Address = tuple[int, int, int, tuple[object, ...]]  # family, type, protocol, sockaddr


def _resolve(host: str, port: int, deadline: float) -> list[Address]:
    """getaddrinfo(), within the deadline: the C resolver has no timeout of its own.

    A name is resolved in a helper thread (``_thread``: built in, nothing to import) that is
    abandoned if it does not answer in time.
    """
    def lookup() -> list[Address]:
        found = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
        return [(family, kind, proto, address) for family, kind, proto, _, address in found]

    if _is_address(host):
        return lookup()
    import _thread

    result: list[object] = []
    done = _thread.allocate_lock()
    done.acquire()

    def work() -> None:
        try:
            result.append(lookup())
        except BaseException as e:  # handed to the waiting thread
            result.append(e)
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise TimeoutError
    answer = result[0]
    if isinstance(answer, OSError):
        raise HttpError(f"cannot resolve {host!r}: {answer.strerror or answer}")
    if isinstance(answer, BaseException):
        raise answer
    assert isinstance(answer, list)
    return answer
