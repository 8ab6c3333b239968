"""The finger protocol, RFC 1288: parse a query line, render an answer. No I/O here.

Everything on the wire is decided in this module: the query grammar (§2.3), the fixed replies
(the refusals use the RFC's own wording: §3.2.1 for forwarding, §3.2.2 for the user list), and
the output filter that §3.3 asks for. The handler and the long-running server both call it, so
they answer the same bytes.

This module is on the per-connection hot path: it imports nothing (but the built-in
``_socket``, when an address is checked).
"""

# A query line longer than this is refused without reading further. RFC 1288 sets no limit; a
# user name plus a few forwarding hosts fits in far less.
MAX_QUERY_BYTES = 512

# Fixed replies, one line each. Tests import these rather than repeating the strings.
FORWARDING_DENIED = "Finger forwarding service denied"  # RFC 1288 §3.2.1, {Q2} refusal
LIST_DENIED = "Finger online user list denied"  # RFC 1288 §3.2.2, {C} refusal
INVALID_QUERY = "Invalid finger query"
QUERY_TOO_LONG = "Finger query too long"
TIMED_OUT = "Timed out waiting for the finger query"
UNAVAILABLE = "Finger service unavailable"
BUSY = "Finger service busy, try again later"  # fingerd serve, over its connection caps
TRUNCATED = "[answer truncated]"

CRLF = "\r\n"

# Telnet (RFC 854): clients such as `telnet host 79` may open with option negotiation.
_IAC, _SB, _SE = 0xFF, 0xFA, 0xF0
_WILL_WONT_DO_DONT = range(0xFB, 0xFF)


class QueryError(ValueError):
    """The query line is not a finger query; ``reply`` is the line to send back."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Query:
    """One parsed finger query: ``[/W] [user][@host...]``, and who asked.

    ``user`` is empty for an online user list request (``finger @host``); ``hosts`` is empty
    unless the client asks this server to forward (``{Q2}``), nearest hop last, as written.
    ``remote`` is the asking client's address as the front end knows it for certain (the
    finger socket's peer), or ``""`` where it cannot vouch for one (``fingerd query``, the web
    view behind a proxy, IRC): a backend that shows more to local askers treats ``""`` as
    remote. Instances are immutable and compare by value.
    """

    __slots__ = ("hosts", "remote", "user", "verbose")

    user: str
    verbose: bool
    hosts: tuple[str, ...]
    remote: str

    def __init__(self, user: str = "", verbose: bool = False, hosts: tuple[str, ...] = (),
                 remote: str = "") -> None:
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "verbose", verbose)
        object.__setattr__(self, "hosts", hosts)
        object.__setattr__(self, "remote", remote)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Query is immutable")

    def _key(self) -> tuple[str, bool, tuple[str, ...], str]:
        return self.user, self.verbose, self.hosts, self.remote

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Query):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        remote = f", remote={self.remote!r}" if self.remote else ""
        return (f"Query(user={self.user!r}, verbose={self.verbose!r}, hosts={self.hosts!r}"
                f"{remote})")

    def asked_by(self, remote: str) -> "Query":
        """This query, as asked by the client at ``remote``."""
        return Query(self.user, self.verbose, self.hosts, remote)

    @property
    def is_list(self) -> bool:
        """An empty user: the client wants the list of users on line (the ``{C}`` query,
        §2.5.1)."""
        return not self.user

    @property
    def is_forward(self) -> bool:
        """The client asks us to pass the query on to another host (``{Q2}``)."""
        return bool(self.hosts)

    def text(self) -> str:
        """The query as a client would send it, without the line end."""
        target = "@".join((self.user, *self.hosts))
        return f"/W {target}" if self.verbose else target

    def next_hop(self) -> "tuple[str, Query]":
        """For a ``{Q2}`` query: the host to connect to, and the query to send it.

        RFC 1288 §2.4: ``user@host1@host2`` arriving here is passed to host2 (the right-most
        host) as ``user@host1``.
        """
        if not self.hosts:
            raise ValueError("not a forwarding query")
        return self.hosts[-1], Query(self.user, self.verbose, self.hosts[:-1], self.remote)


def _strip_telnet(line: bytes) -> bytes:
    """Drop telnet command sequences (IAC ...), which some clients send before the query."""
    out = bytearray()
    i, n = 0, len(line)
    while i < n:
        b = line[i]
        if b != _IAC:
            out.append(b)
            i += 1
            continue
        cmd = line[i + 1] if i + 1 < n else None
        if cmd == _IAC:  # an escaped 0xFF data byte; not valid in a query, left for the decoder
            out.append(_IAC)
            i += 2
        elif cmd == _SB:  # sub-negotiation runs to IAC SE
            end = line.find(bytes((_IAC, _SE)), i + 2)
            i = n if end < 0 else end + 2
        elif cmd is not None and cmd in _WILL_WONT_DO_DONT:
            i += 3
        else:
            i += 2
    return bytes(out)


def _valid_host(host: str) -> bool:
    # Host names and address literals only: this string may end up in a connect() call.
    return bool(host) and len(host) <= 253 and all(c.isascii() and (c.isalnum() or c in ".-:[]_")
                                                   for c in host)


def parse_query(line: bytes, remote: str = "") -> "Query":
    """Parse one query line (with or without its CRLF or LF) per RFC 1288 §2.3.

    ::

        {Q1} ::= [{W}|{W}{S}{U}|{U}]{C}
        {Q2} ::= [{W}{S}][{U}]{H}{C}
        {H}  ::= @hostname | @hostname{H}
        {W}  ::= /W        {S} ::= <SP> | <SP>{S}      {C} ::= <CRLF>

    Lenient where it is harmless (a bare LF, trailing or leading blanks, tabs as blanks, ``/w``,
    telnet negotiation); strict where it is not: anything that is not printable UTF-8 raises
    :class:`QueryError`, as do extra words and empty host names.
    """
    if len(line) > MAX_QUERY_BYTES + 2:
        raise QueryError(QUERY_TOO_LONG)
    name = line[:-2] if line[-2:] == b"\r\n" else line
    if name.isalnum() and len(name) <= MAX_QUERY_BYTES:
        # The usual query, a user name of ASCII letters and digits (bytes.isalnum() knows no
        # others): nothing to strip, decode or check.
        return Query(name.decode("ascii"), False, (), remote)
    if _IAC in line:
        line = _strip_telnet(line)
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_QUERY_BYTES:  # the same limit with CRLF, LF or no line end at all
        raise QueryError(QUERY_TOO_LONG)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise QueryError(INVALID_QUERY) from None
    text = text.replace("\t", " ").strip(" ")
    if not text.isprintable():  # NUL, CR/LF inside the line, ESC, C1 and other controls
        raise QueryError(INVALID_QUERY)

    words = text.split()
    verbose = bool(words) and words[0] in ("/W", "/w")
    if verbose:
        words = words[1:]
    if len(words) > 1:
        raise QueryError(INVALID_QUERY)
    target = words[0] if words else ""

    if "@" not in target:  # the usual case: no forwarding
        if target.startswith("/"):
            raise QueryError(INVALID_QUERY)
        return Query(target, verbose, (), remote)
    user, *hosts = target.split("@")
    if user.startswith("/") or not all(_valid_host(h) for h in hosts):
        raise QueryError(INVALID_QUERY)
    return Query(user, verbose, tuple(hosts), remote)


# The output filter (RFC 1288 §3.3: "filter any unprintable data, leaving only printable 7-bit
# characters (ASCII 32 through ASCII 126), tabs (ASCII 9), and CRLFs"). Backends return text from
# files, programs and web servers that anyone may control; a terminal escape sequence reaching
# the client's terminal can retitle windows, move the cursor or worse.
_ESC, _CSI, _ST, _BEL = "\x1b", "\x9b", "\x9c", "\x07"
_DROP_CONTROLS = {c: None for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F,
                                    *range(0x80, 0xA0))}


def _strip_escapes(text: str) -> str:
    """Remove ANSI/ECMA-48 escape sequences (CSI, OSC/DCS/APC/PM/SOS strings, two-byte ESC)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != _ESC and c != _CSI:
            out.append(c)
            i += 1
            continue
        if c == _CSI or (i + 1 < n and text[i + 1] == "["):
            # CSI: parameter bytes 0x30-0x3F, intermediates 0x20-0x2F, one final byte 0x40-0x7E.
            i += 1 if c == _CSI else 2
            while i < n and "\x20" <= text[i] <= "\x3f":
                i += 1
            i += 1  # the final byte (or whatever stands there: it goes too)
        elif i + 1 < n and text[i + 1] in "]PX^_":
            # A control string: runs to BEL or ST (ESC \ or 0x9C).
            i += 2
            while i < n and text[i] not in (_BEL, _ST, _ESC):
                i += 1
            i += 2 if text[i:i + 2] == _ESC + "\\" else 1
        else:
            # ESC, any intermediates, then one final byte.
            i += 1
            while i < n and "\x20" <= text[i] <= "\x2f":
                i += 1
            i += 1
    return "".join(out)


def render(text: str, *, max_bytes: int, ascii_only: bool = True) -> bytes:
    """Turn a backend's answer into wire bytes: filtered, CRLF line ends, at most ``max_bytes``.

    With ``ascii_only`` (the RFC's rule, and the default) every other character becomes ``?``;
    otherwise printable Unicode is kept as UTF-8. Either way no control character except TAB
    survives, and the result always ends with CRLF (an empty answer is just CRLF).
    """
    if text.isascii() and text.isprintable():
        # The usual answer, one line of printable ASCII: nothing to filter. (isprintable() is
        # False for every control character, TAB and LF included.)
        data = text.rstrip(" ").encode("ascii") + b"\r\n"
        if len(data) <= max_bytes:
            return data
    return _filter(text, max_bytes, ascii_only)


def _filter(text: str, max_bytes: int, ascii_only: bool) -> bytes:
    """:func:`render`, the whole way."""
    if _ESC in text or _CSI in text:
        text = _strip_escapes(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_DROP_CONTROLS)
    if not text.isascii():
        # Unicode format and separator characters (bidi overrides, zero-width joiners, U+2028)
        # are not printable either.
        text = "".join(c for c in text if c in "\t\n" or c.isprintable())
    lines = text.rstrip("\n").split("\n")
    data = (CRLF.join(line.rstrip(" \t") for line in lines) + CRLF).encode(
        "ascii" if ascii_only else "utf-8", "replace")
    if len(data) > max_bytes:
        tail = (CRLF + TRUNCATED + CRLF).encode("ascii")
        cut = data[:max(0, max_bytes - len(tail))]
        # Cut at a line end if there is one, and never inside a UTF-8 sequence.
        cut = cut[:cut.rfind(b"\r\n")] if b"\r\n" in cut else cut
        data = cut.decode("utf-8", "ignore").encode("utf-8") + tail
    return data


def client_address(peer: object) -> str:
    """The client's address from ``getpeername()``, as logged and as counted per source.

    A dual-stack socket ([::]:79, as fingerd.socket and fingerd-server.socket listen) reports
    IPv4 clients as ``::ffff:192.0.2.7``; they are named in their IPv4 form, as systemd's
    ``$REMOTE_ADDR`` names them, so that the journal can be searched one way.
    """
    host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d, how a dual-stack socket shows IPv4
_V6_LOOPBACK = b"\0" * 15 + b"\x01"  # ::1


def pack_address(address: str) -> bytes | None:
    """An IP address as 4 bytes (IPv4, also IPv4-mapped IPv6) or 16 (IPv6); None if it is
    not one. A zone (``fe80::1%eth0``) is dropped. ``_socket`` is built in, and the front
    ends have it loaded already; ``ipaddress`` would import ``re``."""
    import _socket

    address = address.partition("%")[0]
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    try:
        packed = _socket.inet_pton(family, address)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    if len(packed) == 16 and packed[:12] == _V4_MAPPED:
        return packed[12:]
    return packed


def is_loopback(address: str) -> bool:
    """Is the client on this host: 127.0.0.0/8, ::1 or ::ffff:127.x.y.z? An empty address
    (one the front end cannot vouch for, see :class:`Query`) is not."""
    packed = pack_address(address) if address else None
    return packed is not None and ((len(packed) == 4 and packed[0] == 127)
                                   or packed == _V6_LOOPBACK)


def reply_line(message: str) -> bytes:
    """A fixed one-line reply (the messages above, or an admin's configured text)."""
    return render(message, max_bytes=1024)
