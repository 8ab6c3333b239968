"""One finger connection's rules, without I/O: the session every line-oriented front end drives.

As h11 is for HTTP, this is for a finger connection: the front end feeds it the bytes it reads
and asks it what to do; it never touches a socket. The per-connection handler
(fingerd/handler.py) drives it with blocking reads, ``fingerd serve`` (fingerd/server.py) from
its event loop, and both therefore frame, refuse, drain and log alike, by construction:

- **framing**: the query is the first line, up to LF, at most ``MAX_LINE`` bytes with its line
  end; a last line without LF (the client half-closed) is a query too;
- **refusals**: a line over the cap (``Finger query too long``), no line within
  ``[server] read_timeout`` (``Timed out waiting for the finger query``), a connection over the
  server's caps (``Finger service busy, try again later``), a client gone before it asked
  (nothing sent);
- **lingering**: a TCP socket closed with unread input, or receiving input after it was
  closed, makes the kernel send a reset, which destroys whatever of the answer the client has
  not yet received (and makes the client see an error instead of the end of the answer). So
  once the answer is written, unless the client has closed its side already, the front end
  half-closes and discards what still comes (at most ``DRAIN_SECONDS`` and ``DRAIN_BYTES``)
  before it closes: whenever input came after the query line, and whenever some of the answer
  may still be on its way. Only a front end that can tell that the client has acknowledged
  every byte (``fingerd serve`` asks the kernel) closes at once;
- **the record**: one journal record per connection, with one of the outcome names of
  fingerd/service.py.
"""

from fingerd import log
from fingerd.protocol import BUSY as BUSY_TEXT
from fingerd.protocol import MAX_QUERY_BYTES, QUERY_TOO_LONG, TIMED_OUT, reply_line
from fingerd.service import BUSY, DISCONNECTED, INVALID, TIMEOUT, Reply

MAX_LINE = MAX_QUERY_BYTES + 2  # a query and its CRLF
DRAIN_SECONDS = 1.0  # lingering: how long to discard what the client still sends ...
DRAIN_BYTES = 64 * 1024  # ... and how much of it, at most


class Session:
    """One connection, from accept to the log record. Times are ``time.monotonic()`` values.

    Reading: :meth:`receive` each chunk (``b""`` at end of input) until it returns True, or
    call :meth:`timed_out` at ``deadline``, :meth:`reset` if the connection broke. Then, if
    ``reply`` is still None, ``line`` is the query: ask the service and :meth:`answer`. Send
    ``reply.data`` (within ``deadline``), feeding any input that arrives meanwhile to
    :meth:`received_more`; then :meth:`sent` says whether to linger. Last, :meth:`log`.
    """

    __slots__ = ("buffer", "deadline", "extra", "input_closed", "line", "linger",
                 "read_timeout", "reply", "started")

    def __init__(self, now: float, read_timeout: float) -> None:
        self.started = now
        self.read_timeout = read_timeout
        self.deadline = now + read_timeout  # the end of the current phase
        self.buffer = b""
        self.line = b""  # the query line as received (what is logged)
        self.reply: Reply | None = None
        self.linger = False  # unread input may be on its way: half-close and drain first
        self.extra = 0  # bytes received after the query line, all discarded
        self.input_closed = False  # the client half-closed: nothing more can arrive

    # -- reading the query --------------------------------------------------------------------

    def wanted(self) -> int:
        """The most to read now: the rest of the line cap."""
        return MAX_LINE - len(self.buffer)

    def receive(self, data: bytes) -> bool:
        """Bytes of the query (``b""``: end of input). True when reading is over."""
        if not data:
            self.input_closed = True
            if self.buffer:  # a last line without LF: answer it
                self.line = self.buffer
            else:
                self.reply = Reply(b"", DISCONNECTED)
            return True
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\n")
        if end >= 0:
            self.line = buffer[:end + 1]
            self.extra = len(buffer) - end - 1
            self.linger = self.extra > 0
            return True
        if len(buffer) >= MAX_LINE:
            self.line = buffer[:MAX_LINE]
            self.reply = Reply(reply_line(QUERY_TOO_LONG), INVALID)
            self.linger = True  # the rest of the line is still coming
            return True
        self.buffer = buffer
        return False

    def timed_out(self) -> None:
        """No complete line by ``deadline``."""
        self.line = self.buffer
        self.reply = Reply(reply_line(TIMED_OUT), TIMEOUT)

    def reset(self) -> None:
        """The connection broke (a reset) before the query was read: nobody to answer."""
        self.line = self.buffer
        self.input_closed = True
        self.reply = Reply(b"", DISCONNECTED)

    def busy(self, now: float) -> None:
        """Over the server's caps: refused when it came, displaced, or an answer over the
        unsent budget."""
        self.reply = Reply(reply_line(BUSY_TEXT), BUSY)
        if not self.line:  # its query is still on its way: it must not reset "busy"
            self.linger = True
        self.deadline = now + self.read_timeout

    # -- answering ----------------------------------------------------------------------------

    def answer(self, reply: "Reply", now: float) -> None:
        """The service's reply to ``line``; the client has ``read_timeout`` to take it."""
        self.reply = reply
        self.deadline = now + self.read_timeout

    def received_more(self, data: bytes) -> bool:
        """Input after the query line, while answering or lingering: discarded. False when
        reading should stop: the client half-closed, or sent more than ``DRAIN_BYTES``."""
        if not data:
            self.input_closed = True
            return False
        self.extra += len(data)
        self.linger = True
        return self.extra <= DRAIN_BYTES

    def sent(self, now: float, in_flight: bool = True) -> bool:
        """The answer is written. ``in_flight``: some of it may not have reached the client
        yet. True: linger until ``deadline`` (half-close, discard input until end of input);
        False: close now."""
        if in_flight:
            self.linger = True
        if self.input_closed or self.extra > DRAIN_BYTES:
            return False
        if self.linger:
            self.deadline = now + DRAIN_SECONDS
        return self.linger

    # -- the record ---------------------------------------------------------------------------

    def log(self, remote: str, now: float, delivered: bool = True) -> None:
        """The one record of this connection. ``delivered`` False: the client was gone before
        it had the whole answer."""
        reply = self.reply
        assert reply is not None
        outcome = reply.outcome if delivered or not reply.data else DISCONNECTED
        query = reply.query
        log.query_record(remote, self.line.rstrip(b"\r\n").decode("utf-8", "replace"),
                         query.user if query else None, reply.backend, outcome,
                         now - self.started)
