"""The per-connection handler: what ``fingerd@.service`` runs for each accepted connection.

systemd (``Accept=yes``, ``StandardInput=socket``) or inetd hands over the connection as fd 0
and fd 1. The handler reads one query line (bounded in size and time), writes the answer,
logs one record and exits 0, whatever the client did. It works on pipes as well as sockets.

Every connection pays for every import made here, so this module uses only built-in modules
(``select``, ``_signal``, ``_socket`` are compiled into Debian's interpreter) and lets
fingerd/config.py skip the TOML parser when it has a cached copy.
"""

from __future__ import annotations

import os
import select
import time

from fingerd import log
from fingerd.config import ConfigError, load
from fingerd.protocol import (
    MAX_QUERY_BYTES,
    QUERY_TOO_LONG,
    TIMED_OUT,
    UNAVAILABLE,
    client_address,
    reply_line,
)
from fingerd.service import ERROR, INVALID, FingerService, Reply

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from collections.abc import Callable

    from fingerd.protocol import Query
else:
    import _signal  # built in; `signal` itself would import `enum`

DEFAULT_READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0

# How read_query() ended. MORE: a line, and the client sent more after it (unread input at
# close makes the kernel reset the connection, which can destroy the answer: drain it).
LINE, MORE, EOF, TOO_LONG, TIMEOUT, GONE = ("line", "line and more", "eof", "too long",
                                            "timeout", "gone")


def read_query(fd: int, timeout: float) -> tuple[bytes, str]:
    """Read up to the first LF, at most MAX_QUERY_BYTES (+CRLF), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    limit = MAX_QUERY_BYTES + 2
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return buf, TIMEOUT
        try:
            chunk = os.read(fd, limit - len(buf))
        except (ConnectionError, TimeoutError):
            return buf, GONE
        except BlockingIOError:
            continue
        if not chunk:
            return buf, EOF if buf else GONE
        buf += chunk
        end = buf.find(b"\n")
        if end >= 0:
            return buf[:end + 1], LINE if end + 1 == len(buf) else MORE
        if len(buf) >= limit:
            return buf, TOO_LONG


class _Timeout(Exception):
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise _Timeout


def _with_alarm(seconds: float, fn: Callable[[], object]) -> object:
    """Run ``fn`` and interrupt it with SIGALRM after ``seconds`` (raises TimeoutError)."""
    _signal.signal(_signal.SIGALRM, _raise_timeout)
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        try:
            return fn()
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _Timeout:  # also when it fired just as fn() returned, before the disarm
        raise TimeoutError(f"took longer than {seconds:g} s") from None


def alarm_timer(method: Callable[[Query], str | None], query: Query, seconds: float) -> str | None:
    """The chain's time limit per backend call. One process, one thread: a signal will do."""
    return _with_alarm(seconds, lambda: method(query))  # type: ignore[return-value]


def write_all(fd: int, data: bytes) -> bool:
    """Write everything, or give up when the client is gone or stops reading."""
    def write() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    try:
        _with_alarm(WRITE_TIMEOUT, write)
    except (OSError, TimeoutError):  # EPIPE, ECONNRESET, a client that never reads
        return False
    return True


def _peer_socket(fd: int) -> object:
    import _socket

    return _socket.socket(fileno=fd)


def remote_address(fd: int = 0) -> str:
    """The client's address: from systemd's $REMOTE_ADDR, else from the socket itself."""
    addr = os.environ.get("REMOTE_ADDR")
    if addr:
        return addr
    try:
        sock = _peer_socket(fd)
    except OSError:
        return ""  # a pipe: tests, or `fingerd < file`
    try:
        return client_address(sock.getpeername())  # type: ignore[attr-defined]
    except OSError:
        return ""
    finally:
        sock.detach()  # type: ignore[attr-defined]  # fd 0 stays open; it is not ours to close


def drain(fd: int) -> None:
    """After answering a client that sent more than its query line (an over-long line, or more
    lines): close our side and discard what the client still sends.

    Closing a socket with unread data makes the kernel send RST, which may destroy the answer
    before the client reads it. Bounded: 1 s and 64 KiB at most.
    """
    try:
        sock = _peer_socket(fd)
    except OSError:
        return
    try:
        sock.shutdown(1)  # type: ignore[attr-defined]  # SHUT_WR: the client sees our EOF
    except OSError:
        return
    finally:
        sock.detach()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 1.0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    for _ in range(16):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return
        try:
            if not os.read(fd, 4096):
                return
        except OSError:
            return


def main(config_path: str | None = None) -> int:
    """Answer the one query on fd 0/1. Always returns 0: a bad client is not a failed service."""
    started = time.monotonic()
    remote = remote_address(0)
    service = None
    read_timeout = DEFAULT_READ_TIMEOUT
    try:
        cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0] or None
        config = load(config_path, cache)
        read_timeout = config.server.read_timeout
        service = FingerService(config, alarm_timer)
        if config.server.forwarding or any(getattr(b, "needs_network", False)
                                           for _, b in service.backends):
            from fingerd.sandbox import report_if_offline

            report_if_offline(config, service.backends)
    except ConfigError as e:
        log.error(f"configuration error, answering {UNAVAILABLE!r}: {e}")

    line, how = read_query(0, read_timeout)
    if how == GONE:
        reply = Reply(b"", "disconnected")
    elif how == TIMEOUT:
        reply = Reply(reply_line(TIMED_OUT), "timeout")
    elif how == TOO_LONG:
        reply = Reply(reply_line(QUERY_TOO_LONG), INVALID)
    elif service is None:
        reply = Reply(reply_line(UNAVAILABLE), ERROR)
    else:
        try:
            reply = service.respond(line)
        except Exception as e:  # a bug; the client gets a short line, the journal the reason
            log.error(f"internal error: {type(e).__name__}: {e}")
            reply = Reply(reply_line(UNAVAILABLE), ERROR)

    if reply.data:
        if not write_all(1, reply.data):
            reply.outcome = "disconnected"  # gone before it had the answer (EPIPE, reset)
        elif how in (TOO_LONG, MORE):
            drain(0)
    query = reply.query
    log.query_record(remote, line.rstrip(b"\r\n").decode("utf-8", "replace"),
                     query.user if query else None, reply.backend, reply.outcome,
                     time.monotonic() - started)
    return 0
