"""The wire protocol of the status service (``fingerd status``, the ``status`` backend). Pure.

One request per connection on the UNIX stream socket /run/fingerd/status.sock, one reply, then
the server closes. Lines end with LF; everything is UTF-8; numbers are ASCII decimal::

    request = "GET" SP user LF                              anyone: user's current status
            | "SET" SP user SP seconds SP length LF text    set it; seconds: until it expires
                                                            (0: never); text: length bytes
            | "CLEAR" SP user LF                            remove it
    reply   = "STATUS" SP set SP expires SP length LF text  set, expires: Unix times (0: never)
            | "NONE" LF                                     no status (or no such account)
            | "OK" LF                                       SET or CLEAR done
            | "ERR" SP code SP message LF                   refused; the message is for people

``user`` is 1 to 64 bytes, printable, without blanks. Who is asking is not part of a request:
the server takes it from the socket (``SO_PEERCRED``, the kernel's word). Anybody may GET (finger
is public anyway); SET and CLEAR for an account other than the caller's are refused unless the
caller is root.

Written by hand rather than as JSON because the ``status`` backend runs in the per-connection
handler, which pays for every import on every connection: ``json`` costs about 6 ms there,
``re`` about 5 ms, this module nothing but itself (it imports nothing). The parsers work on
bytes handed to them and never touch a socket, so the server's bounds (size, time) and the
tests' garbage and truncation are all about one object.
"""

DEFAULT_SOCKET = "/run/fingerd/status.sock"  # fingerd-status.socket's ListenStream=

# Limits. A status is meant for a line or two on `finger user@host`.
MAX_USER_BYTES = 64
MAX_TEXT_BYTES = 1024
MAX_TEXT_LINES = 4
MAX_SECONDS = 365 * 86400  # the longest expiry: a year
# "CLEAR", "SET" + user + 9-digit seconds + 4-digit length, with blanks and LF: under 100.
MAX_REQUEST_LINE = 128
MAX_MESSAGE = 200  # of an ERR line
MAX_REPLY_BYTES = 160 + MAX_TEXT_BYTES  # the longest STATUS or ERR reply

# Error codes, one word each.
BAD_REQUEST = "bad-request"
TOO_LONG = "too-long"
EMPTY = "empty"
NOT_PERMITTED = "not-permitted"
NO_SUCH_USER = "no-such-user"
RATE_LIMITED = "rate-limited"
BUSY = "busy"
TIMEOUT = "timeout"
INTERNAL = "internal"
BAD_REPLY = "bad-reply"  # the client's own: a reply it cannot read

GET, SET, CLEAR = "GET", "SET", "CLEAR"
STATUS, NONE, OK, ERR = "STATUS", "NONE", "OK", "ERR"

OK_REPLY = b"OK\n"
NONE_REPLY = b"NONE\n"


class ProtocolError(ValueError):
    """A request or reply that breaks the protocol or a limit: ``code`` and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def valid_user(user: str) -> bool:
    """A user name the protocol can carry: 1 to 64 bytes, printable, no blanks."""
    if not (0 < len(user) <= MAX_USER_BYTES and user.isprintable() and " " not in user):
        return False
    try:
        return len(user.encode("utf-8")) <= MAX_USER_BYTES
    except UnicodeEncodeError:  # a lone surrogate (argv that was not UTF-8)
        return False


def check_text(text: str) -> str:
    """The status as stored: CRLF and CR made LF, blanks around it removed; raises
    ProtocolError for an empty one or one over the limits. Control characters are kept:
    fingerd's output filter removes them from every answer, and the CLI shows them escaped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise ProtocolError(EMPTY, "empty status (to remove it: fingerd status clear)")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: argv or a file that was not UTF-8
        raise ProtocolError(BAD_REQUEST, "status is not valid UTF-8") from None
    lines = text.count("\n") + 1
    if size > MAX_TEXT_BYTES or lines > MAX_TEXT_LINES:
        raise ProtocolError(TOO_LONG, f"status too long: {size} bytes in {lines} line(s); the "
                            f"limit is {MAX_TEXT_BYTES} bytes (UTF-8) and {MAX_TEXT_LINES} lines")
    return text


def _number(word: str, what: str, limit: int) -> int:
    if not (word.isascii() and word.isdigit()) or len(word) > len(str(limit)):
        raise ProtocolError(BAD_REQUEST, f"{what} is not a number of at most {limit}")
    value = int(word)
    if value > limit:
        raise ProtocolError(BAD_REQUEST, f"{what} is not a number of at most {limit}")
    return value


def _user(word: str) -> str:
    if not valid_user(word):
        raise ProtocolError(BAD_REQUEST, "bad user name")
    return word


# -- requests ----------------------------------------------------------------------------------

class Request:
    """One parsed request. ``seconds`` and ``text`` only for SET."""

    __slots__ = ("action", "seconds", "text", "user")

    def __init__(self, action: str, user: str, seconds: int = 0, text: str = "") -> None:
        self.action, self.user, self.seconds, self.text = action, user, seconds, text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.action, self.user, self.seconds, self.text) == (
            other.action, other.user, other.seconds, other.text)

    def __hash__(self) -> int:
        return hash((self.action, self.user, self.seconds, self.text))

    def __repr__(self) -> str:
        return (f"Request({self.action!r}, {self.user!r}, seconds={self.seconds!r}, "
                f"text={self.text!r})")


def format_get(user: str) -> bytes:
    return f"GET {_user(user)}\n".encode()


def format_clear(user: str) -> bytes:
    return f"CLEAR {_user(user)}\n".encode()


def format_set(user: str, text: str, seconds: int = 0) -> bytes:
    """A SET request; the text is checked (and normalised) first, raising ProtocolError."""
    if not 0 <= seconds <= MAX_SECONDS:
        raise ProtocolError(BAD_REQUEST, f"expiry out of range (at most {MAX_SECONDS} s)")
    data = check_text(text).encode("utf-8")
    return f"SET {_user(user)} {seconds} {len(data)}\n".encode() + data


class RequestParser:
    """Incremental: :meth:`feed` the bytes as they arrive (``b""`` at end of input) until it
    returns the request. Raises ProtocolError as soon as the input cannot become a valid
    request, without waiting for more: a request line over the limit, a length over the limit,
    garbage, trailing bytes, or the end of input before the request is complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._head: tuple[str, int, int] | None = None  # (user, seconds, length) of a SET
        self.request: Request | None = None

    def feed(self, data: bytes) -> "Request | None":
        if self.request is not None:
            if data:
                raise ProtocolError(BAD_REQUEST, "more than one request")
            return self.request
        if not data:
            raise ProtocolError(BAD_REQUEST, "truncated request" if self._buffer or self._head
                                else "empty request")
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) >= MAX_REQUEST_LINE:
                    raise ProtocolError(BAD_REQUEST, "request line too long")
                return None
            if end >= MAX_REQUEST_LINE:
                raise ProtocolError(BAD_REQUEST, "request line too long")
            line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            request = self._line(line)
            if request is not None:
                if self._buffer:
                    raise ProtocolError(BAD_REQUEST, "more than one request")
                self.request = request
                return request
        assert self._head is not None
        user, seconds, length = self._head
        if len(self._buffer) < length:
            return None
        if len(self._buffer) > length:
            raise ProtocolError(BAD_REQUEST, "more than one request")
        try:
            text = self._buffer.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_REQUEST, "status is not UTF-8") from None
        self.request = Request(SET, user, seconds, check_text(text))
        return self.request

    def _line(self, line: bytes) -> "Request | None":
        """A GET or CLEAR request, or None after a SET line (its text follows)."""
        try:
            words = line.decode("utf-8").split(" ")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_REQUEST, "request line is not UTF-8") from None
        if words[0] in (GET, CLEAR) and len(words) == 2:
            return Request(words[0], _user(words[1]))
        if words[0] == SET and len(words) == 4:
            seconds = _number(words[2], "expiry", MAX_SECONDS)
            length = _number(words[3], "length", 99999)
            if length > MAX_TEXT_BYTES:
                raise ProtocolError(TOO_LONG, f"status too long: {length} bytes; the limit is "
                                    f"{MAX_TEXT_BYTES} bytes (UTF-8) and {MAX_TEXT_LINES} lines")
            self._head = (_user(words[1]), seconds, length)
            return None
        raise ProtocolError(BAD_REQUEST, "unknown request (GET, SET or CLEAR)")


# -- replies -----------------------------------------------------------------------------------

class Reply:
    """One parsed reply: ``kind`` is STATUS, NONE, OK or ERR."""

    __slots__ = ("code", "expires_at", "kind", "message", "set_at", "text")

    def __init__(self, kind: str, *, set_at: int = 0, expires_at: int = 0, text: str = "",
                 code: str = "", message: str = "") -> None:
        self.kind, self.set_at, self.expires_at, self.text = kind, set_at, expires_at, text
        self.code, self.message = code, message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[object, ...]:
        return (self.kind, self.set_at, self.expires_at, self.text, self.code, self.message)

    def __repr__(self) -> str:
        return (f"Reply({self.kind!r}, set_at={self.set_at}, expires_at={self.expires_at}, "
                f"text={self.text!r}, code={self.code!r}, message={self.message!r})")


def format_status(set_at: int, expires_at: int, text: str) -> bytes:
    data = text.encode("utf-8")
    return f"STATUS {set_at} {expires_at} {len(data)}\n".encode() + data


def format_error(code: str, message: str) -> bytes:
    """One ERR line: the message made one printable line of at most MAX_MESSAGE characters."""
    message = "".join(c if c.isprintable() else "?" for c in message)[:MAX_MESSAGE]
    return f"ERR {code} {message}\n".encode()


def parse_reply(data: bytes) -> "Reply":
    """A whole reply, read to the end of input; raises ProtocolError(BAD_REPLY) for garbage,
    truncation or trailing bytes."""
    end = data.find(b"\n")
    if end < 0 or len(data) > MAX_REPLY_BYTES:
        raise ProtocolError(BAD_REPLY, "truncated reply" if end < 0 else "reply too long")
    try:
        line = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REPLY, "reply is not UTF-8") from None
    rest = data[end + 1:]
    word, _, args = line.partition(" ")
    if word in (OK, NONE) and not args and not rest:
        return Reply(word)
    if word == ERR and not rest:
        code, _, message = args.partition(" ")
        if code and message and message.isprintable():
            return Reply(ERR, code=code, message=message)
    elif word == STATUS:
        try:
            set_at, expires_at, length = (_number(w, "time", 2**40) for w in args.split(" "))
            text = rest.decode("utf-8")
        except (ProtocolError, ValueError):  # ValueError: not three numbers; not UTF-8
            raise ProtocolError(BAD_REPLY, "malformed STATUS reply") from None
        if len(rest) == length and text:
            return Reply(STATUS, set_at=set_at, expires_at=expires_at, text=text)
    raise ProtocolError(BAD_REPLY, "malformed reply")
