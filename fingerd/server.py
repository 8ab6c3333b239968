"""``fingerd serve``: one long-running process for all connections.

For hosts with real traffic (``fingerd-server.socket``, ``Accept=no``), for hosts without
systemd, and for development (``make run``). Each connection is driven by the same session as
the per-connection handler (fingerd/session.py: framing, refusals, lingering, the log record)
and answered by the same service, so both send the same bytes. This module only moves bytes:
its own small event loop on ``select.epoll``, connection states, deadlines, SIGHUP and SIGTERM.
The caps live in fingerd/admission.py, the worker threads in fingerd/pool.py, process plumbing
(sockets from systemd, readiness, switching user) in fingerd/daemon.py.

Backend calls that do not block (``static``) run inline, right here; blocking ones on the
worker pool, whose results come back through an eventfd. SIGHUP reloads the config for new
connections; SIGTERM and SIGINT stop accepting, finish the connections in flight (bounded) and
exit 0.

A broken configuration never stops the server: it answers every query "Finger service
unavailable", logs why (at priority err), and tries the configuration again every
``RETRY_SECONDS`` and on SIGHUP, so that it recovers by itself once the file is fixed. A server
that exited instead would be restarted by systemd until its start limit, which leaves the
socket unit failed: port 79 closed until an admin runs ``systemctl reset-failed``.

Why its own loop: a finger connection is one line in, one answer out, so most connections are
answered straight after accept() without ever being registered with epoll, and the loop costs
less CPU per request than an ``asyncio.Protocol`` server, uvloop's or Twisted's (README.md,
"Performance"). Deadlines are enforced by a sweep over the open connections ten times a
second: no timer objects per connection, and memory stays flat.

Longer than the other modules (about 500 lines), on purpose: a connection's life — accept,
read, ask, write, linger, close — is one state machine together with the loop that drives it,
and it reads best in one place.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import sys
import termios
import time
from functools import partial

from fingerd import log
from fingerd.admission import Admission, source_key
from fingerd.backends import service_from
from fingerd.config import ConfigError, load
from fingerd.daemon import (
    RETRY_SECONDS,
    UsageError,
    drop_privileges,
    listening_sockets,
    notify,
    reloaded,
    socket_name,
    unavailable_service,
)
from fingerd.pool import Pool
from fingerd.protocol import client_address
from fingerd.service import DISCONNECTED, Reply
from fingerd.session import DRAIN_BYTES, Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.pool import Job
    from fingerd.service import Call, FingerService, Lookup

DEFAULT_LISTEN = "127.0.0.1:1079"
SWEEP_INTERVAL = 0.1  # seconds between deadline checks
# Connections accepted (and, their query being there, answered) per turn of the loop and
# listener, so that no listener starves; the journal records of a turn go out at its end. Larger
# turns answer a busy client, and hand the journal its records, in bursts, which showed in p99
# (README.md, "Performance", the long-running paragraphs).
ACCEPT_BATCH = 16

# Connection states.
READING, ASKING, WRITING, LINGERING, CLOSED = range(5)

_DONTWAIT = socket.MSG_DONTWAIT
_STREAM = socket.SOCK_STREAM
_TIOCOUTQ = termios.TIOCOUTQ  # SIOCOUTQ: bytes in the send queue not yet acknowledged
_INT = b"\0\0\0\0"
_EPOLLIN, _EPOLLOUT = select.EPOLLIN, select.EPOLLOUT


class Connection:
    """One client and its session."""

    __slots__ = ("admitted", "call", "held", "job", "lookup", "out", "registered", "remote",
                 "service", "session", "sock", "source", "state", "writes")

    def __init__(self, sock: _socket.socket, remote: str, service: FingerService,
                 now: float) -> None:
        self.sock = sock
        self.remote = remote
        self.source = source_key(remote)
        self.service = service  # a reload mid-query does not change this one's answer
        self.session = Session(now, service.server.read_timeout)
        self.state = READING
        self.admitted = False
        self.registered = 0  # the epoll events this socket is registered for; 0: not at all
        self.lookup: Lookup | None = None
        self.call: Call | None = None  # the blocking call on the pool
        self.job: Job | None = None
        self.out: bytes | memoryview = b""  # the rest of the answer, still to send
        self.held = 0  # of it, what counts against the unsent budget
        self.writes = 0


def _displaceable(conn: Connection) -> int:
    """Whether the admission may displace ``conn`` for a newcomer, and how readily (see
    fingerd/admission.py): 2, it still waits for its query line (it has asked nothing yet);
    1, its lookup waits for a worker thread, so no backend has been called for it (the client
    is told busy instead of its answer, which may be slow in coming); 0, not at all."""
    if conn.state == READING:
        return 2
    return 1 if conn.state == ASKING and conn.job is not None and not conn.job.started else 0


class Server:
    """The listening sockets, the current service (swapped on SIGHUP), the connections, and
    the loop that serves them."""

    def __init__(self, config_path: str | None, service: FingerService) -> None:
        self.config_path = config_path
        self.service = service
        self.admission = Admission(service.server, _displaceable)  # type: ignore[arg-type]
        self.connections: dict[int, Connection] = {}  # by fd: everything open, refusals too
        self.accept_paused = False  # out of file descriptors: listeners off until the sweep
        self.epoll = select.epoll()
        self.listeners: dict[int, socket.socket] = {}
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll.register(self.wakeup, _EPOLLIN)
        self.pool = Pool(self._wake)
        self.signals: set[int] = set()
        self.signal_r, self.signal_w = socket.socketpair()
        for sock in (self.signal_r, self.signal_w):
            sock.setblocking(False)
        self.epoll.register(self.signal_r.fileno(), _EPOLLIN)

    def _wake(self) -> None:
        """In a worker thread: a job is done."""
        with contextlib.suppress(OSError):  # the counter is full: the loop is awake anyway
            os.eventfd_write(self.wakeup, 1)

    def reload(self, retry: bool = False) -> None:
        """SIGHUP: a new config for new connections; on any error keep the old one. ``retry``:
        the periodic attempt while broken, which logs only a change of error."""
        # After --user: the file must be readable by that user (under systemd it is 0644).
        result = reloaded(self.config_path, self.service, lambda config: None, retry=retry)
        if result is None:
            return
        self.service = service = result[0]
        if service.broken:
            return
        self.admission.update(service.server)
        notify("STATUS=")
        log.send(f"configuration reloaded from {service.path}")

    # -- accepting ----------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        service = self.service
        family = listener.family
        admission = self.admission
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = listener._accept()  # type: ignore[attr-defined]  # no socket object
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client reset before we got to it
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.pause_accepting(e)
                else:
                    log.error(f"accept failed: {e.strerror or e}")
                return
            # The built-in class: the socket module's subclass adds a Python __init__ and
            # close() to every connection.
            sock = _socket.socket(family, _STREAM, 0, fd)
            now = time.monotonic()
            conn = Connection(sock, client_address(peer), service, now)
            self.connections[fd] = conn
            admitted, victim = admission.admit(conn)
            if victim is not None:
                self.refuse(victim, now)  # type: ignore[arg-type]
            if not admitted:
                self.refuse(conn, now)
                continue
            conn.admitted = True
            # The query is usually there already: answer it without a trip through epoll.
            self.readable(conn)

    def refuse(self, conn: Connection, now: float) -> None:
        """Over the caps: "busy". Refusals hold a descriptor while they linger; past
        max_connections of them, a refused client is closed at once."""
        if conn.admitted:
            conn.admitted = False  # the admission released it already
        if conn.job is not None:  # displaced while its lookup waited for a thread
            self.pool.abandon(conn.job)
            conn.job = conn.call = conn.lookup = None
        conn.session.busy(now)
        if len(self.connections) - self.admission.admitted > self.service.server.max_connections:
            conn.session.linger = False
        self.send(conn)

    def pause_accepting(self, error: OSError) -> None:
        """Out of file descriptors (or memory): stop polling the listeners until the next sweep,
        instead of waking up for them at once, failing again and logging each time."""
        if self.accept_paused:
            return
        self.accept_paused = True
        for fd in self.listeners:
            self.epoll.modify(fd, 0)
        log.error(f"accept failed: {error.strerror or error}; not accepting for "
                  f"{SWEEP_INTERVAL:g} s ({len(self.connections)} connections open)")

    def resume_accepting(self) -> None:
        self.accept_paused = False
        for fd in self.listeners:
            self.epoll.modify(fd, _EPOLLIN)

    # -- reading ------------------------------------------------------------------------------

    def readable(self, conn: Connection) -> None:
        state = conn.state
        session = conn.session
        try:
            data = conn.sock.recv(4096 if state != READING else session.wanted(), _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            if state == READING and not conn.registered:
                self.watch(conn, _EPOLLIN)
            return
        except OSError:  # a reset: the client is gone, whatever it had sent
            if state == READING:
                session.reset()
            # Lingering, the answer was all written: as the handler, it counts as delivered.
            self.close(conn, delivered=state in (READING, LINGERING))
            return
        if state == READING:
            if session.receive(data):
                if session.reply is None:
                    self.ask(conn)
                else:
                    self.send(conn)
            elif not conn.registered:
                self.watch(conn, _EPOLLIN)
            return
        if not session.received_more(data):  # the client half-closed, or sends too much
            if state == LINGERING:
                self.close(conn)
            elif state == WRITING:
                self.watch(conn, _EPOLLOUT)
            else:
                self.unwatch(conn)

    # -- asking the service -------------------------------------------------------------------

    def ask(self, conn: Connection) -> None:
        conn.lookup = conn.service.lookup(conn.session.line, conn.remote)
        self.advance(conn)

    def advance(self, conn: Connection) -> None:
        """Run the lookup's calls: inline while they do not block, else on the pool."""
        lookup = conn.lookup
        assert lookup is not None
        call = lookup.run_until_blocking()
        if call is not None:
            conn.state = ASKING
            conn.call = call
            conn.session.deadline = time.monotonic() + call.timeout
            conn.job = self.pool.submit(conn.source, call, partial(self.called, conn))
            if conn.registered != _EPOLLIN:  # input that comes meanwhile is read and discarded
                self.watch(conn, _EPOLLIN)
            return
        conn.call = conn.job = conn.lookup = None
        conn.session.answer(lookup.reply_or_error(), time.monotonic())
        self.send(conn)

    def called(self, conn: Connection, job: Job) -> None:
        """From the pool, in the loop: the call is done."""
        if conn.job is not job or conn.lookup is None or conn.call is None:
            return
        if job.error is not None:
            conn.lookup.failed(conn.call, job.error)
        else:
            conn.lookup.answered(conn.call, job.answer)
        self.advance(conn)

    # -- writing ------------------------------------------------------------------------------

    def send(self, conn: Connection) -> None:
        """Send the session's reply; what does not go out at once is sent as the socket
        drains (and counts against the unsent budget)."""
        session = conn.session
        reply = session.reply
        assert reply is not None
        data = reply.data
        if not data:
            self.close(conn)
            return
        if len(data) > DRAIN_BYTES and not self.admission.may_hold(len(data)):
            # (the whole answer counts while any of it waits: the rest is a view of it)
            log.warning(f"{len(data)} bytes to send and {self.admission.unsent} unsent already:"
                        f" over the budget of {self.admission.budget}, answering busy")
            session.busy(time.monotonic())
            data = session.reply.data  # type: ignore[union-attr]
        try:
            sent = conn.sock.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client is gone
            self.close(conn, delivered=False)
            return
        conn.writes = 1
        if sent < len(data):
            conn.out = memoryview(data)[sent:]  # slices of it copy nothing
            conn.held = len(data)
            self.admission.unsent += conn.held
            conn.state = WRITING
            self.watch(conn, _EPOLLOUT | (_EPOLLIN if not session.input_closed else 0))
            return
        self.sent(conn)

    def writable(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.out, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn, delivered=False)
            return
        conn.writes += 1
        conn.out = conn.out[sent:]
        if not conn.out:
            self.sent(conn)

    def sent(self, conn: Connection) -> None:
        """All of the answer is written: linger, or close."""
        try:  # what the client has not acknowledged yet (on loopback, nothing by now)
            in_flight = conn.writes > 1 or fcntl.ioctl(conn.sock.fileno(), _TIOCOUTQ, _INT) != _INT
        except OSError:
            in_flight = True
        if not conn.session.sent(time.monotonic(), bool(in_flight)):
            self.close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.state = LINGERING
        self.watch(conn, _EPOLLIN)

    # -- bookkeeping --------------------------------------------------------------------------

    def watch(self, conn: Connection, events: int) -> None:
        fd = conn.sock.fileno()
        if conn.registered:
            if conn.registered != events:
                self.epoll.modify(fd, events)
        else:
            self.epoll.register(fd, events)
        conn.registered = events

    def unwatch(self, conn: Connection) -> None:
        if conn.registered:
            self.epoll.unregister(conn.sock.fileno())
            conn.registered = 0

    def close(self, conn: Connection, delivered: bool = True) -> None:
        """The end of a connection, and its one log record."""
        if conn.state == CLOSED:
            return
        if conn.job is not None:
            self.pool.abandon(conn.job)  # the client is gone: nobody waits for this answer
            conn.job = None
        if conn.held:
            self.admission.unsent -= conn.held
            conn.held = 0
        fd = conn.sock.fileno()
        if conn.registered:
            self.epoll.unregister(fd)
            conn.registered = 0
        conn.state = CLOSED
        del self.connections[fd]
        if conn.admitted:
            conn.admitted = False
            self.admission.release(conn)
        conn.sock.close()
        session = conn.session
        if session.reply is None:  # gone while its lookup ran
            session.reply = Reply(b"", DISCONNECTED, conn.lookup.query if conn.lookup else None)
        session.log(conn.remote, time.monotonic(), delivered and not conn.out)

    def sweep(self, now: float) -> None:
        """Enforce every connection's deadline: the read timeout, each backend call's time
        limit, the write timeout and the lingering period."""
        for conn in [c for c in self.connections.values() if c.session.deadline <= now]:
            state = conn.state
            if state == READING:
                conn.session.timed_out()
                self.send(conn)
            elif state == ASKING:
                job, call, lookup = conn.job, conn.call, conn.lookup
                assert job is not None and call is not None and lookup is not None
                self.pool.abandon(job)
                conn.job = None
                lookup.failed(call, TimeoutError(f"took longer than {call.timeout:g} s"))
                self.advance(conn)
            elif state == WRITING:  # a client that does not read its answer
                self.close(conn, delivered=False)
            else:  # the lingering period is over
                self.close(conn)

    # -- the loop -----------------------------------------------------------------------------

    def on_signal(self, signum: int, frame: object) -> None:
        self.signals.add(signum)

    def run(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.setblocking(False)
            self.listeners[sock.fileno()] = sock
            self.epoll.register(sock.fileno(), _EPOLLIN)
        old_wakeup = signal.set_wakeup_fd(self.signal_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        try:
            names = ", ".join(socket_name(sock) for sock in sockets)
            log.send(f"serving on {names} with {self.service.path}")
            if self.service.broken:
                notify("READY=1\nSTATUS=configuration error: answering "
                       "\"Finger service unavailable\" until it is fixed")
            else:
                notify("READY=1")
            log.batch()
            self.loop(stopping_at=None)
            notify("STOPPING=1")
            for fd, sock in self.listeners.items():
                self.epoll.unregister(fd)
                sock.close()
            self.listeners.clear()
            # Connections in flight get their answer, within their own time limits.
            server = self.service.server
            self.loop(stopping_at=time.monotonic() + server.read_timeout
                      + server.backend_timeout * len(self.service.chain) + 1)
            for conn in list(self.connections.values()):
                self.close(conn, delivered=False)
            log.send("stopped")
        finally:
            log.flush()
            signal.set_wakeup_fd(old_wakeup)

    def loop(self, stopping_at: float | None) -> None:
        """Serve until SIGTERM/SIGINT or, when stopping, until every connection is done."""
        poll = self.epoll.poll
        connections = self.connections
        listeners = self.listeners
        wakeup, signal_fd = self.wakeup, self.signal_r.fileno()
        flush = log.flush
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        next_retry = time.monotonic() + RETRY_SECONDS
        while True:
            if stopping_at is not None and (not connections or time.monotonic() > stopping_at):
                return
            timeout = max(0.0, next_sweep - time.monotonic())
            for fd, events in poll(timeout):
                conn = connections.get(fd)
                if conn is not None:
                    if events & _EPOLLOUT and conn.state == WRITING:
                        self.writable(conn)
                    if events & ~_EPOLLOUT and conn.state != CLOSED:
                        self.readable(conn)
                elif fd in listeners:
                    self.accept(listeners[fd])
                elif fd == wakeup:
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        os.eventfd_read(wakeup)
                    self.pool.collect()
                elif fd == signal_fd:
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        self.signal_r.recv(512)
            if self.signals:
                signals, self.signals = self.signals, set()
                if signal.SIGHUP in signals:
                    self.reload()
                if (signal.SIGTERM in signals or signal.SIGINT in signals) and stopping_at is None:
                    return
            now = time.monotonic()
            if now >= next_sweep:
                self.sweep(now)
                if self.accept_paused and listeners:
                    self.resume_accepting()
                next_sweep = now + SWEEP_INTERVAL
                if self.service.broken and now >= next_retry and stopping_at is None:
                    self.reload(retry=True)
                    next_retry = now + RETRY_SECONDS
            flush()


def serve(config_path: str | None, listen: list[str], user: str | None) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    # Until the event loop handles SIGHUP, one would kill us (its default action); the config
    # is about to be read anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The config is read before privileges are dropped (a reload on SIGHUP reads it as --user).
    try:
        service = service_from(load(config_path))
    except ConfigError as e:
        log.error(f"configuration error, answering {'Finger service unavailable'!r} until it "
                  f"is fixed: {e}")
        service = unavailable_service(e.path, e)
    try:
        sockets = listening_sockets(listen, DEFAULT_LISTEN)
        drop_privileges(user)
    except UsageError as e:
        print(f"fingerd serve: {e}", file=sys.stderr)
        return 2
    server = Server(config_path, service)
    try:
        server.run(sockets)
    finally:
        server.pool.shutdown()
    stuck = server.pool.busy()
    if stuck:
        # Backend calls that hang beyond every time limit (their clients were answered
        # already). The interpreter would wait for their threads at exit, and systemd until
        # TimeoutStopSec=; nothing they could still do matters now.
        log.warning(f"exiting with {stuck} backend call(s) still running")
        log.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0

