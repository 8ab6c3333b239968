"""``fingerd serve``: one long-running process for all connections.

For hosts without systemd, for development (``make run``), and for hosts with real traffic
(``fingerd-server.socket``, ``Accept=no``: systemd passes the listening sockets, see
sd_listen_fds(3)). It answers exactly like the per-connection handler, because both call
:meth:`fingerd.service.FingerService.respond`, and applies the same limits to every connection
(read timeout, line cap, output filter) plus caps on concurrent connections in total and per
source address, so that one client cannot starve the others.

Backends that may block (files, programs, HTTP) run in worker threads; the event loop only
moves bytes. SIGHUP reloads the config without dropping connections; SIGTERM and SIGINT stop
accepting, let the connections in flight finish (bounded) and exit 0.

The event loop is a small one of its own on ``select.epoll``, chosen by measurement (see
README.md, "Performance"): a finger connection is one line in, one answer out, so most
connections are answered straight after accept() without ever being registered with epoll, and
the loop costs about a third of an ``asyncio.Protocol`` server's CPU per request (less than
uvloop's, or Twisted's). Timeouts are checked by a sweep over the open connections ten times a
second, which needs no timer objects per connection and keeps memory flat.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sys
import time
from collections import deque

from fingerd import log
from fingerd.config import ConfigError, load
from fingerd.protocol import (
    BUSY,
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
    from collections.abc import Callable
    from concurrent.futures import Future, ThreadPoolExecutor

    from fingerd.protocol import Query

DEFAULT_LISTEN = "127.0.0.1:1079"
SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
WORKER_THREADS = 16
# Backend calls run here, each waited for at most [server] backend_timeout; one that takes longer
# is abandoned (a thread cannot be stopped) and keeps its thread until it returns.
BACKEND_THREADS = 32
SWEEP_INTERVAL = 0.1  # seconds between timeout checks
ACCEPT_BATCH = 64  # connections accepted per wake-up and listener, so that none starves
DRAIN_SECONDS = 1.0  # after a refusal: how long to discard what the client still sends
LINE_LIMIT = MAX_QUERY_BYTES + 2  # a query and its CRLF

# Connection states.
READING, WAITING, WRITING, DRAINING, CLOSED = range(5)

_DONTWAIT = socket.MSG_DONTWAIT
_EPOLLIN, _EPOLLOUT = select.EPOLLIN, select.EPOLLOUT


class UsageError(Exception):
    """A command-line problem, reported in one line."""


class Connection:
    """One client: read one line (bounded), answer it, close. The handler's rules, evented."""

    __slots__ = ("admitted", "buffer", "deadline", "future", "line", "more", "out",
                 "registered", "remote", "service", "sock", "source", "started", "state")

    def __init__(self, sock: socket.socket, remote: str, service: FingerService,
                 started: float) -> None:
        self.sock = sock
        self.remote = remote
        self.source = source_key(remote)  # what the per-source cap counts
        self.service = service  # a reload mid-query does not change this one's answer
        self.started = started
        self.deadline = started + service.server.read_timeout
        self.buffer = b""
        self.line = b""
        self.out = b""
        self.state = READING
        self.admitted = False
        self.more = False  # the client sent more than its query line: drain before closing
        self.registered = 0  # the epoll events this socket is registered for; 0: not at all
        self.future: Future[Reply] | None = None


def source_key(address: str) -> str:
    """The per-source cap counts an IPv4 address, or an IPv6 /64: one host usually has a whole
    /64 to pick addresses from."""
    if ":" not in address:
        return address
    try:
        return socket.inet_pton(socket.AF_INET6, address)[:8].hex() + "::/64"
    except OSError:
        return address


class BackendTimer:
    """``fingerd serve``'s time limit per backend call, as the handler's SIGALRM is for it.

    The call runs on a thread of its own pool and is waited for ``[server] backend_timeout``
    seconds; then it counts as failed and the chain asks the next backend, exactly as in the
    handler. A thread cannot be interrupted, so a call that hangs keeps its thread until it
    returns; when all are taken, calls wait in the queue, time out and fail the same way.
    """

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.running: set[Future[str | None]] = set()

    def __call__(self, method: Callable[[Query], str | None], query: Query,
                 seconds: float) -> str | None:
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(BACKEND_THREADS, thread_name_prefix="fingerd-backend")
        future = self.pool.submit(method, query)
        self.running.add(future)
        future.add_done_callback(self.running.discard)
        try:
            return future.result(timeout=seconds)
        except TimeoutError:
            future.cancel()  # if it is still queued, it never starts
            raise TimeoutError(f"took longer than {seconds:g} s "
                               f"({len(self.running)} backend call(s) still running)") from None

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class Server:
    """The listening sockets, the current service (swapped on SIGHUP), the connections, the
    caps, and the loop that serves them."""

    def __init__(self, config_path: str | None, service: FingerService,
                 timer: BackendTimer) -> None:
        self.config_path = config_path
        self.service = service
        self.timer = timer  # every service this server loads gets it
        self.pool: ThreadPoolExecutor | None = None
        self.accept_paused = False  # out of file descriptors: listeners off until the sweep
        self.connections: dict[int, Connection] = {}  # by fd: everything open, refusals too
        self.admitted = 0
        self.per_source: dict[str, int] = {}
        self.epoll = select.epoll()
        self.listeners: dict[int, socket.socket] = {}
        # Worker threads hand their answers back through this queue and wake the loop up.
        self.done: deque[tuple[Connection, Future[Reply]]] = deque()
        # Lookups submitted and not yet finished (a worker thread removes its own).
        self.pending: set[Future[Reply]] = set()
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll.register(self.wakeup, _EPOLLIN)
        self.signals: set[int] = set()
        self.signal_r, self.signal_w = socket.socketpair()
        for sock in (self.signal_r, self.signal_w):
            sock.setblocking(False)
        self.epoll.register(self.signal_r.fileno(), _EPOLLIN)

    # -- the caps -----------------------------------------------------------------------------

    def admit(self, source: str) -> bool:
        server = self.service.server
        if (self.admitted >= server.max_connections
                or self.per_source.get(source, 0) >= server.max_connections_per_source):
            return False
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self.admitted += 1
        return True

    def refusals(self) -> int:
        """Connections held only to deliver "busy" (draining): they are bounded too."""
        return len(self.connections) - self.admitted

    def release(self, source: str) -> None:
        self.admitted -= 1
        count = self.per_source.get(source, 0) - 1
        if count > 0:
            self.per_source[source] = count
        else:
            self.per_source.pop(source, None)

    def reload(self) -> None:
        """SIGHUP: a new config for new connections; on error keep the old one and say why."""
        try:
            # After --user: the file must be readable by that user (under systemd it is 0644).
            self.service = FingerService(load(self.config_path), self.timer)
        except ConfigError as e:
            log.error(f"reload failed, keeping the running configuration: {e}")
            return
        log.send(f"configuration reloaded from {self.service.config.path}")

    # -- connections --------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        service = self.service
        family = listener.family
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
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            remote = client_address(peer)
            conn = Connection(sock, remote, service, time.monotonic())
            self.connections[fd] = conn
            if not self.admit(conn.source):
                # Refusals hold a descriptor while they drain; past max_connections of them,
                # a refused client is closed at once (its "busy" line may then be lost).
                drain = self.refusals() <= service.server.max_connections
                self.finish(conn, Reply(reply_line(BUSY), "busy"), drain=drain)
                continue
            conn.admitted = True
            # The query is usually there already: answer it without a trip through epoll.
            self.readable(conn)

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

    def readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(4096, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            if conn.state == READING and not conn.registered:
                self.watch(conn, _EPOLLIN)
            return
        except OSError:  # a reset: the client is gone, whatever it had sent
            if conn.state == READING:
                conn.line = conn.buffer
                self.finish(conn, Reply(b"", "disconnected"))
            else:
                self.close(conn)
            return
        if conn.state != READING:
            if not data:  # a draining client closed its side, or left
                self.close(conn)
            return  # after a refusal: discard, until the client closes (see handler.drain)
        if not data:
            if conn.buffer:
                self.query(conn, conn.buffer)  # a last line without LF: answer it
            else:
                self.finish(conn, Reply(b"", "disconnected"))
            return
        buffer = conn.buffer + data if conn.buffer else data
        end = buffer.find(b"\n")
        if end >= 0:
            conn.more = end + 1 < len(buffer)
            self.query(conn, buffer[:end + 1])
        elif len(buffer) >= LINE_LIMIT:
            conn.line = buffer
            self.finish(conn, Reply(reply_line(QUERY_TOO_LONG), INVALID), drain=True)
        else:
            conn.buffer = buffer
            if not conn.registered:
                self.watch(conn, _EPOLLIN)

    def query(self, conn: Connection, line: bytes) -> None:
        conn.line = line
        service = conn.service
        if not service.blocking:
            self.finish(conn, self.respond(service, line, conn.remote))
            return
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="fingerd-lookup")
        conn.state = WAITING
        # Backends bound their own time; this is the backstop for one that does not.
        budget = service.server.backend_timeout * max(1, len(service.backends)) + 1
        conn.deadline = time.monotonic() + budget
        if conn.registered:
            self.unwatch(conn)
        future = self.pool.submit(self.respond, service, line, conn.remote)
        conn.future = future
        self.pending.add(future)
        future.add_done_callback(lambda f: self.answered(conn, f))

    def answered(self, conn: Connection, future: Future[Reply]) -> None:
        """In a worker thread: hand the answer to the loop."""
        self.pending.discard(future)
        self.done.append((conn, future))
        with contextlib.suppress(OSError):  # the counter is full: the loop is awake anyway
            os.eventfd_write(self.wakeup, 1)

    def collect(self) -> None:
        """In the loop: send the answers that worker threads have finished."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.eventfd_read(self.wakeup)
        while self.done:
            conn, future = self.done.popleft()
            if conn.state != WAITING or conn.future is not future or future.cancelled():
                continue  # answered "unavailable" already: a result that comes later is dropped
            conn.future = None
            self.finish(conn, future.result())

    @staticmethod
    def respond(service: FingerService, line: bytes, remote: str) -> Reply:
        try:
            return service.respond(line, remote)
        except Exception as e:  # a bug; the client gets a short line, the log the reason
            log.error(f"internal error: {type(e).__name__}: {e}")
            return Reply(reply_line(UNAVAILABLE), ERROR)

    def finish(self, conn: Connection, reply: Reply, drain: bool = False) -> None:
        """Send ``reply``, then close (or half-close and drain), and log the one record."""
        drain = drain or conn.more
        data = reply.data
        sock = conn.sock
        if data:
            try:
                sent = sock.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the client is gone: nothing more to send
                sent = len(data)
                reply.outcome = "disconnected"
            data = data[sent:]
        if data:
            conn.out = data
            conn.state = DRAINING if drain else WRITING
            conn.deadline = time.monotonic() + conn.service.server.read_timeout
            self.watch(conn, _EPOLLOUT)
        elif drain:
            self.start_drain(conn)
        else:
            self.close(conn)
        query = reply.query
        log.query_record(conn.remote, conn.line.rstrip(b"\r\n").decode("utf-8", "replace"),
                         query.user if query else None, reply.backend, reply.outcome,
                         time.monotonic() - conn.started)

    def start_drain(self, conn: Connection) -> None:
        # Half-close and keep discarding input for a moment: closing with unread data would
        # send RST and could destroy the answer before the client reads it.
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.state = DRAINING
        conn.deadline = time.monotonic() + DRAIN_SECONDS
        self.watch(conn, _EPOLLIN)

    def writable(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.out, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            return
        if conn.state == DRAINING:
            self.start_drain(conn)
        else:
            self.close(conn)

    def watch(self, conn: Connection, events: int) -> None:
        fd = conn.sock.fileno()
        if conn.registered:
            self.epoll.modify(fd, events)
        else:
            self.epoll.register(fd, events)
        conn.registered = events

    def unwatch(self, conn: Connection) -> None:
        if conn.registered:
            self.epoll.unregister(conn.sock.fileno())
            conn.registered = 0

    def close(self, conn: Connection) -> None:
        if conn.state == CLOSED:
            return
        fd = conn.sock.fileno()
        if conn.registered:
            self.epoll.unregister(fd)
            conn.registered = 0
        conn.state = CLOSED
        del self.connections[fd]
        if conn.admitted:
            conn.admitted = False
            self.release(conn.source)
        conn.sock.close()

    def sweep(self, now: float) -> None:
        """Enforce every connection's deadline: the read timeout, the answer's time budget,
        the write timeout and the drain period."""
        for conn in [c for c in self.connections.values() if c.deadline <= now]:
            state = conn.state
            if state == READING:
                conn.line = conn.buffer
                self.finish(conn, Reply(reply_line(TIMED_OUT), "timeout"))
            elif state == WAITING:
                if conn.future is not None:
                    conn.future.cancel()  # a result that comes later is dropped
                    conn.future = None
                log.error(f"no answer within the time budget for {conn.line!r}")
                self.finish(conn, Reply(reply_line(UNAVAILABLE), ERROR))
            else:  # a client that does not read its answer, or a drain period that is over
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
            names = ", ".join(_name(sock) for sock in sockets)
            log.send(f"serving on {names} with {self.service.config.path}")
            notify("READY=1")
            log.batch()
            self.loop(stopping_at=None)
            notify("STOPPING=1")
            for fd, sock in self.listeners.items():
                self.epoll.unregister(fd)
                sock.close()
            self.listeners.clear()
            # Drain: connections in flight get their answer, within their own time limits.
            self.loop(stopping_at=time.monotonic() + self.service.server.read_timeout + 1)
            for conn in list(self.connections.values()):
                self.close(conn)
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
        while True:
            if stopping_at is not None and (not connections or time.monotonic() > stopping_at):
                return
            timeout = max(0.0, next_sweep - time.monotonic())
            for fd, events in poll(timeout):
                conn = connections.get(fd)
                if conn is not None:
                    if events & _EPOLLOUT:
                        self.writable(conn)
                    else:
                        self.readable(conn)
                elif fd in listeners:
                    self.accept(listeners[fd])
                elif fd == wakeup:
                    self.collect()
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
            flush()


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:1079 or [::1]:79")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)  # noqa: S104 (":79" means every address, as asked)


def bind(spec: str) -> socket.socket:
    host, port = parse_listen(spec)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {spec}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def systemd_sockets() -> list[socket.socket]:
    """Listening sockets passed by systemd (``LISTEN_FDS``), per sd_listen_fds(3).

    python-systemd's ``systemd.daemon.listen_fds`` when it is installed (Debian's package
    depends on it); otherwise the same protocol, read here.
    """
    try:
        from systemd.daemon import listen_fds
    except ImportError:
        fds = _listen_fds()
    else:
        fds = listen_fds(unset_environment=True)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def _listen_fds() -> list[int]:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def notify(state: str) -> None:
    """sd_notify(3): tell systemd we are ready / stopping, when it asked (Type=notify)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    try:
        from systemd.daemon import notify as sd_notify
    except ImportError:
        pass
    else:
        if not sd_notify(state):
            log.warning(f"sd_notify({state!r}) failed")
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as e:
        log.warning(f"sd_notify failed: {e}")


def drop_privileges(user: str | None) -> None:
    """Become ``user`` after binding (as the tutorial's ``Application(uid=, gid=)`` does)."""
    if os.geteuid() != 0:
        if user:
            import pwd

            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                raise UsageError(f"--user {user}: no such user") from None
            if uid != os.geteuid():
                raise UsageError(f"--user {user}: only root can switch users")
        return
    if not user:
        raise UsageError("refusing to serve as root: pass --user USER (an unprivileged "
                         "account to switch to once the ports are bound)")
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    if entry.pw_uid == 0:
        raise UsageError(f"--user {user}: that is root")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def serve(config_path: str | None, listen: list[str], user: str | None) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    # Until the event loop handles SIGHUP, one would kill us (its default action); the config
    # is about to be read anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The config is read before binding, so that a broken one is reported without touching the
    # network, and before privileges are dropped (a reload on SIGHUP reads it as --user).
    timer = BackendTimer()
    service = FingerService(load(config_path), timer)  # ConfigError: reported by the caller
    try:
        sockets = systemd_sockets()
        if not sockets:
            sockets = [bind(spec) for spec in (listen or [DEFAULT_LISTEN])]
        drop_privileges(user)
    except UsageError as e:
        print(f"fingerd serve: {e}", file=sys.stderr)
        return 2
    server = Server(config_path, service, timer)
    try:
        server.run(sockets)
    finally:
        if server.pool is not None:
            server.pool.shutdown(wait=False, cancel_futures=True)
        timer.shutdown()
    stuck = len(server.pending) + len(timer.running)
    if stuck:
        # Backend calls that hang beyond every time limit (their clients were answered
        # already). The interpreter would wait for their threads at exit, and systemd until
        # TimeoutStopSec=; nothing they could still do matters now.
        log.warning(f"exiting with {stuck} lookup(s) still running")
        log.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
