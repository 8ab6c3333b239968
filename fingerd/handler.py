"""The per-connection handler: what ``fingerd@.service`` runs for each accepted connection.

systemd (``Accept=yes``, ``StandardInput=socket``) or inetd hands over the connection as fd 0
and fd 1. This module only moves bytes: the session (fingerd/session.py) frames the query,
refuses, decides about lingering and logs; the service (fingerd/service.py) answers. It exits
0 whatever the client did, and works on pipes as well as sockets.

It also holds the runner of a process that answers one query (this handler, ``fingerd
query``): :func:`alarm_runner`. The service decides *which* backend to ask; a runner decides
*how* the call runs and for how long, and each front end chooses its own (the long-running
ones: non-blocking calls inline on their event loop, blocking ones on fingerd/pool.py). Here
the call runs in this one thread, and ``SIGALRM`` interrupts it after ``[server]
backend_timeout`` seconds by raising inside it (the backend contract allows that).

Every connection pays for every module it imports, each one a cost of its own however small
(README.md, "Performance"), so: the alarm runner is here rather than in a module of its own;
this module uses only built-in modules (``select``, ``_signal``, ``_socket`` are compiled into
Debian's interpreter; ``signal`` would import ``enum``); fingerd/config.py skips the TOML
parser when it has a cached copy; and no module on this path, nor any that a built-in
backend imports, says ``from __future__ import annotations``, which imports the
``__future__`` module (annotations naming types imported for type checking only are strings
instead). tests/test_handler.py holds the path's list.
"""

import os
import select
import time

from fingerd import log
from fingerd.config import ConfigError, load
from fingerd.protocol import UNAVAILABLE, client_address
from fingerd.service import unavailable
from fingerd.session import DRAIN_BYTES, Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from collections.abc import Callable
    from typing import TypeVar

    from fingerd.service import Call

    T = TypeVar("T")
else:
    import _signal

DEFAULT_READ_TIMEOUT = 10.0


# -- the runner: backend calls under an alarm ---------------------------------------------------

class _Alarm(BaseException):
    """Raised by the SIGALRM handler inside whatever ran too long. Not an Exception, so that a
    backend's own ``except Exception`` cannot swallow it and run on."""


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def with_alarm(seconds: float, fn: "Callable[[], T]") -> "T":
    """``fn()``, interrupted after ``seconds`` with a TimeoutError ("took longer than N s")."""
    _signal.signal(_signal.SIGALRM, _raise_alarm)
    try:
        try:
            # Armed inside the try: a timer that fires before fn() starts (a tiny limit, a
            # loaded machine) raises here, and must become the TimeoutError too.
            _signal.setitimer(_signal.ITIMER_REAL, seconds)
            return fn()
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _Alarm:  # also when it fired just as fn() returned, before the disarm
        raise TimeoutError(f"took longer than {seconds:g} s") from None


def alarm_runner(call: "Call") -> str | None:
    """Run ``call`` in this thread within its time limit (the main thread only: signals)."""
    return with_alarm(call.timeout, call.run)


# -- one connection ------------------------------------------------------------------------------


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


def _wait(poller: "select.poll", deadline: float) -> bool:
    """Wait until fd 0 is readable (True) or ``deadline`` passes (False)."""
    left = deadline - time.monotonic()
    return left > 0 and bool(poller.poll(left * 1000))


def read_query(session: "Session", poller: "select.poll") -> None:
    """Read until the session has its query line, or a refusal, or the deadline."""
    while True:
        if not _wait(poller, session.deadline):
            session.timed_out()
            return
        try:
            data = os.read(0, session.wanted())
        except BlockingIOError:
            continue
        except OSError:  # ECONNRESET, ETIMEDOUT: the client is gone
            session.reset()
            return
        if session.receive(data):
            return


def write_all(fd: int, data: bytes, seconds: float) -> bool:
    """Write everything within ``seconds``; False if the client is gone or stopped reading
    (EPIPE, ECONNRESET, the time limit)."""
    def write() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    try:
        with_alarm(seconds, write)
    except (OSError, TimeoutError):
        return False
    return True


def linger(session: "Session", poller: "select.poll") -> None:
    """Half-close, then discard what the client still sends, within the session's limits.

    Only sockets linger: on a pipe there is no reset to avoid.
    """
    try:
        sock = _peer_socket(0)
    except OSError:
        return
    try:
        sock.shutdown(1)  # type: ignore[attr-defined]  # SHUT_WR: the client sees our EOF
    except OSError:
        return
    finally:
        sock.detach()  # type: ignore[attr-defined]
    while _wait(poller, session.deadline):
        try:
            if not session.received_more(os.read(0, DRAIN_BYTES)):
                return
        except OSError:
            return
        if time.monotonic() >= session.deadline:
            return


def main(config_path: str | None = None) -> int:
    """Answer the one query on fd 0/1. Always returns 0: a bad client is not a failed service."""
    started = time.monotonic()
    remote = remote_address(0)
    service = None
    read_timeout = DEFAULT_READ_TIMEOUT
    try:
        from fingerd.backends import service_from

        cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0] or None
        config = load(config_path, cache)
        read_timeout = config.server.read_timeout
        service = service_from(config)
        if config.server.forwarding or any(getattr(b, "needs_network", False)
                                           for _, b in service.chain):
            from fingerd.sandbox import report_if_offline

            report_if_offline(config, service.chain)
    except ConfigError as e:
        log.error(f"configuration error, answering {UNAVAILABLE!r}: {e}")

    session = Session(started, read_timeout)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    read_query(session, poller)
    if session.reply is None:
        reply = (service.respond(session.line, alarm_runner, remote) if service is not None
                 else unavailable())
        session.answer(reply, time.monotonic())
    assert session.reply is not None
    reply = session.reply
    delivered = True
    # The handler always lingers unless the client closed its side: whether the client has
    # acknowledged the answer could be asked of the kernel (TIOCOUTQ), but `termios` costs each
    # connection 0.3 ms to import, and lingering costs this process time, not CPU.
    if reply.data:
        delivered = write_all(1, reply.data, session.read_timeout)
        if delivered and session.sent(time.monotonic()):
            linger(session, poller)
    session.log(remote, time.monotonic(), delivered)
    return 0
