"""One HTTP/1.1 connection of ``fingerd web``, framed by h11.

h11 (Debian python3-h11) is a sans-I/O HTTP/1.1 parser made for exactly this: it is fed the
bytes read and hands back requests, and turns responses into bytes; no HTTP parsing is written
here. This module moves those bytes, within limits whatever the client does:

- the request line and headers at most ``MAX_HEAD`` bytes (431; a request target over
  ``MAX_TARGET``: 414);
- all of a request within ``[server] read_timeout``: a silent or dribbling client gets 408 and
  is cut off; an idle keep-alive connection is closed after the same time;
- methods other than GET and HEAD: 405; a body on GET at most ``DRAIN_BYTES`` (413); HTTP
  versions but 1.0 and 1.1: 505; garbage: 400;
- never a traceback on the wire: a bug is logged and answered 500;
- at most ``MAX_REQUESTS`` requests per connection; the answer sent within ``read_timeout``.

What a request asks and how its answer looks is fingerd/web/routes.py; the answer is the finger
service's (fingerd/aio.py). One journal record per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time

import h11

from fingerd import log
from fingerd.admission import source_key
from fingerd.aio import respond
from fingerd.protocol import UNAVAILABLE
from fingerd.service import DISCONNECTED, ERROR, INVALID, TIMEOUT
from fingerd.session import DRAIN_BYTES, DRAIN_SECONDS
from fingerd.web.pages import plain, status_text
from fingerd.web.routes import Ask, Request, route

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.web.pages import Response
    from fingerd.web.server import WebServer

MAX_HEAD = 16 * 1024  # the request line and headers
MAX_TARGET = 4096  # the request target
MAX_REQUESTS = 100  # per connection, then Connection: close
READ_CHUNK = 8192
ALLOW = (("Allow", "GET, HEAD"),)


class HeadTooLarge(Exception):
    """A request line (414) or headers (431) over the limits."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Connection:
    """One client: its streams, who it is (for the caps, the worker pool and the journal), and
    the h11 state of its requests."""

    __slots__ = ("conn", "method", "peer", "reader", "server", "source", "trusted", "waiting",
                 "writer")

    def __init__(self, server: WebServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str, source: str, trusted: bool) -> None:
        self.server = server
        self.reader, self.writer = reader, writer
        self.peer = peer
        self.source = source  # what the per-source connection cap counts
        self.trusted = trusted  # a proxy: its X-Forwarded-* headers are believed
        self.waiting = True  # between requests with nothing received: may be closed on stop
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.method = b""  # of the request being answered: a HEAD's answer has no body

    @property
    def read_timeout(self) -> float:
        return self.server.service.server.read_timeout

    async def run(self) -> None:
        """Serve requests until the client or a limit ends the connection."""
        conn = self.conn
        for number in range(1, MAX_REQUESTS + 1):
            started = time.monotonic()
            self.waiting = True
            self.method = b""
            # All of the request, head and body, within read_timeout of its first byte's wait.
            deadline = asyncio.get_running_loop().time() + self.read_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    request = await self.read_request()
            except TimeoutError:
                if not conn.trailing_data[0] and number > 1:
                    return  # an idle keep-alive connection: just closed
                await self.refuse(408, TIMEOUT, "", started)
                return
            except HeadTooLarge as e:
                await self.refuse(e.status, INVALID, "", started)
                return
            except OSError:  # a reset (mid-request or between requests): the client is gone
                if not self.waiting or number == 1:
                    self.record(self.peer, "", None, "", DISCONNECTED, started)
                return
            except h11.RemoteProtocolError as e:
                if conn.trailing_data[1]:  # the client closed mid-request: nobody to tell
                    self.record(self.peer, "", None, "", DISCONNECTED, started)
                    return
                status = e.error_status_hint
                line_end = conn.trailing_data[0].find(b"\n")
                if status == 431 and not 0 <= line_end <= MAX_TARGET + 32:
                    status = 414  # it is the request line that is too long
                await self.refuse(status, INVALID, "", started)
                return
            if request is None:
                return  # the client closed the connection between requests
            self.waiting = False
            last = number == MAX_REQUESTS or self.server.stopping
            if not await self.answer(request, started, deadline, last):
                return
            if conn.our_state is h11.MUST_CLOSE or self.server.stopping:
                return
            conn.start_next_cycle()

    async def read_request(self) -> h11.Request | None:
        """The next request's head (None: the client closed between requests)."""
        conn = self.conn
        # h11 bounds a head it is still waiting for; one that arrives whole in the last read
        # may be up to READ_CHUNK larger: counted here.
        buffered = len(conn.trailing_data[0])
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(READ_CHUNK)
                if data:
                    self.waiting = False
                    buffered += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                self.method = event.method
                if buffered - len(conn.trailing_data[0]) > MAX_HEAD:
                    raise HeadTooLarge(431 if len(event.target) <= MAX_TARGET else 414)
                return event
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # h11 yields nothing else between requests
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")

    async def answer(self, request: h11.Request, started: float, deadline: float,
                     last: bool) -> bool:
        """Answer one request; False when the connection must end here."""
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if request.http_version not in (b"1.0", b"1.1"):
            return await self.refuse(505, INVALID, target, started)
        if method not in ("GET", "HEAD"):
            return await self.refuse(405, INVALID, target, started, extra=ALLOW)
        if len(request.target) > MAX_TARGET:
            return await self.refuse(414, INVALID, target, started)
        if not await self.read_body(target, started, deadline):
            return False
        headers: dict[bytes, bytes] = {}
        for name, value in request.headers:
            headers[name] = headers[name] + b", " + value if name in headers else value
        forwarded = _forwarded_for(headers.get(b"x-forwarded-for", b""))
        asker = (forwarded if self.trusted else None) or self.peer
        server = self.server
        try:
            result = route(Request(method, request.target, headers, self.peer), server.settings)
            if isinstance(result, Ask):
                assert server.pool is not None
                # Behind a proxy nobody can vouch for the asker: backends see a remote one.
                reply = await respond(server.service, result.line, server.pool,
                                      source_key(asker), remote="" if self.trusted else self.peer)
                response = result.render(reply)
                query = result.line.decode("utf-8").rstrip("\r\n")
                user = reply.query.user if reply.query else None
                backend, outcome, frontend = reply.backend, reply.outcome, result.frontend
            else:
                response, query, user = result.response, result.query, result.user
                backend, outcome, frontend = "", result.outcome, result.frontend
        except Exception as e:  # a bug: logged, the client gets one line
            log.error(f"internal error answering {target!r}: {type(e).__name__}: {e}")
            response, query, user, backend, outcome, frontend = (
                plain(500, UNAVAILABLE, close=True), target, None, "", ERROR, "web")
        if last and not response.close:
            response.headers.append(("Connection", "close"))
        sent = await self.send(response, head=method == "HEAD")
        self.record(asker, query, user, backend, outcome if sent else DISCONNECTED, started,
                    frontend)
        return sent

    async def read_body(self, target: str, started: float, deadline: float) -> bool:
        """Read and discard a GET's body, if it has one (at most DRAIN_BYTES)."""
        conn = self.conn
        if conn.they_are_waiting_for_100_continue:
            continued = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            self.writer.write(continued or b"")
        size = 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await self.reader.read(READ_CHUNK))
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > DRAIN_BYTES:
                            return await self.refuse(413, INVALID, target, started)
                    else:  # EndOfMessage
                        return True
        except TimeoutError:
            return await self.refuse(408, TIMEOUT, target, started)
        except h11.RemoteProtocolError:
            return await self.refuse(400, INVALID, target, started)
        except OSError:  # a reset in the middle of the body: nobody to answer
            self.record(self.peer, target, None, "", DISCONNECTED, started)
            return False

    async def refuse(self, status: int, outcome: str, query: str, started: float,
                     extra: tuple[tuple[str, str], ...] = ()) -> bool:
        """An HTTP-level error, then the end of the connection. Returns False."""
        sent = False
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = plain(status, status_text(status), close=True, extra=extra)
            sent = await self.send(response, head=self.method == b"HEAD")
        self.record(self.peer, query, None, "", outcome if sent else DISCONNECTED, started)
        return False

    async def send(self, response: Response, head: bool) -> bool:
        """Send ``response`` within the read timeout. False: the client is gone (or slow)."""
        conn = self.conn
        headers = [(name.encode(), value.encode()) for name, value in response.headers]
        try:
            data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                          reason=response.reason.encode())) or b""
            if response.body and not head:
                data += conn.send(h11.Data(data=response.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as e:  # a bug of ours, not the client's
            log.error(f"cannot send a {response.status} response: {e}")
            return False
        admission = self.server.admission
        held = len(data) if len(data) > DRAIN_BYTES else 0
        if held and not admission.may_hold(held):
            log.warning(f"{held} bytes to send and {admission.unsent} unsent already: "
                        f"over the budget of {admission.budget}, closing")
            return False
        admission.unsent += held
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.read_timeout):
                await self.writer.drain()
        except (OSError, TimeoutError):
            return False
        finally:
            admission.unsent -= held
        return True

    async def close(self) -> None:
        """Half-close, discard what the client still sends (bounded), close: unread input
        would make the kernel reset the connection and destroy the end of the answer."""
        reader, writer = self.reader, self.writer
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, asyncio.CancelledError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
                drained = 0
                async with asyncio.timeout(DRAIN_SECONDS):
                    while drained <= DRAIN_BYTES and (data := await reader.read(READ_CHUNK)):
                        drained += len(data)
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(1):
                await writer.wait_closed()

    def record(self, remote: str, query: str, user: str | None, backend: str, outcome: str,
               started: float, frontend: str = "web") -> None:
        log.query_record(remote, query, user, backend, outcome, time.monotonic() - started,
                         frontend=frontend)


def _forwarded_for(header: bytes) -> str | None:
    """The client as the nearest proxy saw it: the last address of X-Forwarded-For."""
    last = header.decode("latin-1").rpartition(",")[2].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None
