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
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from fingerd import log
from fingerd.config import ConfigError, load
from fingerd.protocol import (
    BUSY,
    MAX_QUERY_BYTES,
    QUERY_TOO_LONG,
    TIMED_OUT,
    UNAVAILABLE,
    reply_line,
)
from fingerd.service import ERROR, INVALID, FingerService, Reply

DEFAULT_LISTEN = "127.0.0.1:1079"
SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
WORKER_THREADS = 16


class UsageError(Exception):
    """A command-line problem, reported in one line."""


class Server:
    """The listening sockets, the current service (swapped on SIGHUP) and the connection caps."""

    def __init__(self, config_path: str | None, service: FingerService) -> None:
        self.config_path = config_path
        self.service = service
        self.pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="fingerd-lookup")
        self.connections: set[Connection] = set()
        self.per_source: dict[str, int] = {}

    def admit(self, source: str) -> bool:
        server = self.service.server
        if (len(self.connections) >= server.max_connections
                or self.per_source.get(source, 0) >= server.max_connections_per_source):
            return False
        self.per_source[source] = self.per_source.get(source, 0) + 1
        return True

    def release(self, source: str) -> None:
        count = self.per_source.get(source, 0) - 1
        if count > 0:
            self.per_source[source] = count
        else:
            self.per_source.pop(source, None)

    def reload(self) -> None:
        """SIGHUP: a new config for new connections; on error keep the old one and say why."""
        try:
            self.service = FingerService(load(self.config_path))
        except ConfigError as e:
            log.error(f"reload failed, keeping the running configuration: {e}")
            return
        log.send(f"configuration reloaded from {self.service.config.path}")


class Connection(asyncio.Protocol):
    """One client: read one line (bounded), answer it, close. The handler's rules, evented."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.service = server.service  # a reload mid-query does not change this one's answer
        self.buffer = b""
        self.answered = False
        self.admitted = False
        self.started = time.monotonic()
        self.remote = ""
        self.line = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.server.admit(self.remote):
            self.answered = True
            self._finish(Reply(reply_line(BUSY), "busy"), drain=True)
            return
        self.admitted = True
        self.server.connections.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.service.server.read_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # after a refusal: discard, until the client closes (see handler.drain)
        self.buffer += data
        end = self.buffer.find(b"\n")
        if end >= 0:
            self._query(self.buffer[:end + 1])
        elif len(self.buffer) >= MAX_QUERY_BYTES + 2:
            self.line = self.buffer
            self.answered = True
            self._finish(Reply(reply_line(QUERY_TOO_LONG), INVALID), drain=True)

    def eof_received(self) -> bool:
        if not self.answered:
            if self.buffer:
                self._query(self.buffer)  # a last line without LF: answer it
            else:
                self.answered = True
                self._finish(Reply(b"", "disconnected"))
        return True  # keep our half open: the answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer:
            self.timer.cancel()
        if self.admitted:
            self.admitted = False
            self.server.connections.discard(self)
            self.server.release(self.remote)

    def _timed_out(self) -> None:
        if not self.answered:
            self.answered = True
            self.line = self.buffer
            self._finish(Reply(reply_line(TIMED_OUT), "timeout"))
        elif self.transport:
            # The answer took too long (a stuck backend thread), or the client does not read.
            self.transport.abort()

    def _query(self, line: bytes) -> None:
        self.answered = True
        self.line = line
        service = self.service
        if not service.blocking:
            self._finish(self._respond(service, line))
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.server.pool, self._respond, service, line)
        future.add_done_callback(lambda f: None if f.cancelled() else self._finish(f.result()))
        if self.timer:
            # Backends bound their own time; this is the backstop for one that does not.
            self.timer.cancel()
            budget = service.server.backend_timeout * max(1, len(service.backends)) + 1
            self.timer = loop.call_later(budget, self._answer_too_slow, future)

    def _answer_too_slow(self, future: asyncio.Future[Reply]) -> None:
        if not future.done():
            future.cancel()  # a result that comes later is dropped
            log.error(f"no answer within the time budget for {self.line!r}")
            self._finish(Reply(reply_line(UNAVAILABLE), ERROR))

    @staticmethod
    def _respond(service: FingerService, line: bytes) -> Reply:
        try:
            return service.respond(line)
        except Exception as e:  # a bug; the client gets a short line, the log the reason
            log.error(f"internal error: {type(e).__name__}: {e}")
            return Reply(reply_line(UNAVAILABLE), ERROR)

    def _finish(self, reply: Reply, drain: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.timer:
            self.timer.cancel()
            self.timer = None
        if reply.data:
            transport.write(reply.data)
        if drain and transport.can_write_eof():
            # Half-close and keep discarding input for a moment: closing with unread data
            # would send RST and could destroy the refusal before the client reads it.
            transport.write_eof()
            self.timer = asyncio.get_running_loop().call_later(1.0, transport.close)
        else:
            transport.close()
        query = reply.query
        log.query_record(self.remote, self.line.rstrip(b"\r\n").decode("utf-8", "replace"),
                         query.user if query else None, reply.backend, reply.outcome,
                         time.monotonic() - self.started)


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
    """Listening sockets passed by systemd (``LISTEN_FDS``), per sd_listen_fds(3)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    sockets = [socket.socket(fileno=fd) for fd in range(SD_LISTEN_FDS_START,
                                                          SD_LISTEN_FDS_START + count)]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def notify(state: str) -> None:
    """sd_notify(3): tell systemd we are ready / stopping, when it asked (Type=notify)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
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

            if pwd.getpwnam(user).pw_uid != os.geteuid():
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
    # The config is read before privileges are dropped (it may be readable by root only), and
    # before binding, so that a broken one is reported without touching the network.
    service = FingerService(load(config_path))  # ConfigError: reported by the caller
    try:
        sockets = systemd_sockets()
        if not sockets:
            sockets = [bind(spec) for spec in (listen or [DEFAULT_LISTEN])]
        drop_privileges(user)
    except UsageError as e:
        print(f"fingerd serve: {e}", file=sys.stderr)
        return 2
    server = Server(config_path, service)
    try:
        asyncio.run(_run(server, sockets))
    finally:
        server.pool.shutdown(wait=False, cancel_futures=True)
    return 0


async def _run(server: Server, sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    listeners = [await loop.create_server(lambda: Connection(server), sock=sock)
                 for sock in sockets]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    names = ", ".join(_name(sock) for sock in sockets)
    log.send(f"serving on {names} with {server.service.config.path}")
    notify("READY=1")
    await stop.wait()

    notify("STOPPING=1")
    for listener in listeners:
        listener.close()
    # Drain: connections in flight get their answer, within their own time limits.
    deadline = time.monotonic() + server.service.server.read_timeout + 1
    while server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(server.connections):
        if connection.transport:
            connection.transport.abort()
    log.send("stopped")


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
