"""``fingerd status-server``: the status service behind /run/fingerd/status.sock.

(A little over 350 lines: the service is one process with one job — who may do what, bounded
in time, connections and rate — and it reads best in one place; the protocol and the storage
are modules of their own.)

``fingerd-status.socket`` listens (``Accept=no``, mode 0666) and starts
``fingerd-status.service`` on the first connection: one long-running process, sandboxed with a
transient user (``DynamicUser=yes``), which owns the statuses in its ``StateDirectory=`` and
answers everybody who asks (see fingerd/status_protocol.py for the protocol):

- GET from anyone: the ``status`` backend of fingerd@.service and ``fingerd serve`` asks here,
  because units with ``DynamicUser=`` cannot read each other's state directories;
- SET and CLEAR only for the caller's own account, as the kernel says (``SO_PEERCRED``: the
  UID of the process that connected; nothing in the request can change it), or for anyone
  when the caller is root. Only accounts in the passwd database (NSS) have a status.

Bounds, so that no local user can take the service, the disk or the journal for themselves:
every request must be complete within ``--request-timeout`` seconds and fit the protocol's
limits (a status is at most 1 KiB and 4 lines); at most 256 connections at once, 64 per UID;
SET and CLEAR (except root's) take a token from a per-UID bucket of 5 that refills one per
minute, and a refused one is logged once until the next accepted one; an attempt on someone
else's status is always refused, and logged only while the caller has tokens left. Each SET or
CLEAR is logged with the caller's UID and the user, never the text.

After ``--idle-exit`` seconds without a connection (default 600 when socket-activated, at
least the time a bucket takes to refill, so that exiting forgets nothing that matters), the
process exits 0 and the socket starts it again on the next connection.

asyncio, because this is a long-running process (it pays the import once) and it keeps many
slow clients apart with per-connection deadlines in a few lines.
"""

from __future__ import annotations

import asyncio
import math
import os
import pwd
import signal
import socket
import struct
import sys
import time

from fingerd import log
from fingerd.daemon import notify, systemd_sockets
from fingerd.status_protocol import (
    BUSY,
    CLEAR,
    DEFAULT_SOCKET,
    GET,
    INTERNAL,
    NO_SUCH_USER,
    NONE_REPLY,
    NOT_PERMITTED,
    OK_REPLY,
    RATE_LIMITED,
    TIMEOUT,
    ProtocolError,
    Request,
    RequestParser,
    format_error,
    format_status,
)
from fingerd.status_store import Status, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_STATE_DIR = "/var/lib/fingerd-status"
REQUEST_TIMEOUT = 5.0
IDLE_EXIT = 600.0
MAX_CONNECTIONS = 256
# A long-running front end asks from one UID on as many backend threads as its pool allows
# (fingerd/pool.py, up to 128); more than this at once are told "busy" (the lookup fails and
# the chain goes on).
MAX_CONNECTIONS_PER_UID = 64
BURST = 5  # changes in a row
REFILL_SECONDS = 60.0  # then one more per minute
_PEERCRED = struct.Struct("i2I")  # struct ucred: pid_t pid, uid_t uid, gid_t gid


class RateLimiter:
    """A token bucket per UID: ``burst`` changes at once, then one per ``refill`` seconds."""

    def __init__(self, burst: int = BURST, refill: float = REFILL_SECONDS) -> None:
        self.burst, self.refill = burst, refill
        # uid -> (tokens, when counted, refusal already logged)
        self.buckets: dict[int, tuple[float, float, bool]] = {}

    def take(self, uid: int, now: float) -> tuple[float, bool]:
        """(0, False) and a token taken, or (seconds until one is there, whether this is the
        first refusal since the last change went through)."""
        tokens, then, logged = self.buckets.get(uid, (float(self.burst), now, False))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) / self.refill)
        if tokens >= 1:
            self.buckets[uid] = (tokens - 1, now, False)
            return 0.0, False
        self.buckets[uid] = (tokens, now, True)
        return (1 - tokens) * self.refill, not logged

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again (a full bucket is what a new one is)."""
        for uid, (tokens, then, _) in list(self.buckets.items()):
            if tokens + (now - then) / self.refill >= self.burst:
                del self.buckets[uid]


def account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class StatusService:
    """What to answer a request from ``uid``, without sockets: storage, permissions, limits,
    and the log."""

    def __init__(self, store: Store, limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.limiter = limiter or RateLimiter()
        self.clock = clock

    def handle(self, request: Request, uid: int, pid: int = 0) -> bytes:
        if request.action == GET:
            return self.get(request.user)
        return self.change(request, uid, pid)

    def get(self, user: str) -> bytes:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            return NONE_REPLY
        status = self.store.get(user)
        if status is None or status.uid != account.pw_uid:  # none, or an older same-named account
            return NONE_REPLY
        if status.expired(self.clock()):
            self.store.remove(user)
            return NONE_REPLY
        return format_status(status.set_at, status.expires_at, status.text)

    def change(self, request: Request, uid: int, pid: int) -> bytes:
        user, action = request.user, request.action.lower()
        shown = log.printable(user)
        now = self.clock()
        fields = {"STATUS_ACTION": action, "STATUS_USER": shown, "STATUS_CALLER_UID": uid,
                  "STATUS_CALLER_PID": pid}
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            return format_error(NO_SUCH_USER, f"no such account: {shown}")
        if uid != 0 and account.pw_uid != uid:
            # Always refused; logged only while the caller's bucket has tokens, so that
            # attempts cannot flood the journal either.
            if not self.limiter.take(uid, now)[0]:
                log.warning(f"status: {account_name(uid)} (uid {uid}) may not {action} the "
                            f"status of {shown}: refused", **fields)
            return format_error(NOT_PERMITTED, f"not permitted: {account_name(uid)} may change "
                                f"only their own status, not {shown}'s (root may change anyone's)")
        if uid != 0:
            wait, first = self.limiter.take(uid, now)
            if wait:
                if first:
                    log.warning(f"status: {account_name(uid)} (uid {uid}) changes too often; "
                                "refused until a minute has passed (further refusals are not "
                                "logged until then)", **fields)
                return format_error(RATE_LIMITED, f"too many changes: try again in "
                                    f"{int(wait) + 1} s (at most {self.limiter.burst} in a row, "
                                    f"then one every {self.limiter.refill:g} s)")
        if request.action == CLEAR:
            removed = self.store.remove(user)
            log.send(f"status of {shown} {'cleared' if removed else 'cleared (there was none)'}"
                     f" by {account_name(uid)} (uid {uid})", log.INFO, **fields)
            return OK_REPLY if removed else NONE_REPLY
        # Rounded up: a status may outlive its time by under a second, never fall short of it.
        expires = math.ceil(now + request.seconds) if request.seconds else 0
        self.store.put(user, Status(account.pw_uid, int(now), expires, request.text))
        until = f"expires in {request.seconds} s" if expires else "no expiry"
        log.send(f"status of {shown} set by {account_name(uid)} (uid {uid}), {until}",
                 log.INFO, STATUS_EXPIRES=expires or None, **fields)
        return OK_REPLY


class Server:
    """The socket side: connections, their bounds and their callers' credentials."""

    def __init__(self, service: StatusService, request_timeout: float = REQUEST_TIMEOUT,
                 idle_exit: float = 0.0) -> None:
        self.service = service
        self.request_timeout = request_timeout
        self.idle_exit = idle_exit
        self.active = 0
        self.per_uid: dict[int, int] = {}
        self.last_activity = time.monotonic()
        self.stopping: asyncio.Event | None = None

    async def run(self, listener: socket.socket) -> None:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        server = await asyncio.start_unix_server(self.connection, sock=listener)
        notify("READY=1")
        log.send(f"status service ready on {listener.getsockname() or 'a passed socket'}")
        watcher = asyncio.create_task(self.watch())
        await self.stopping.wait()
        notify("STOPPING=1")
        watcher.cancel()
        server.close()  # stop accepting; with socket activation systemd keeps the socket
        deadline = time.monotonic() + self.request_timeout + 1
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def watch(self) -> None:
        """Once a second: forget full buckets, and exit when idle long enough."""
        assert self.stopping is not None
        while True:
            await asyncio.sleep(1.0)
            self.service.limiter.prune(self.service.clock())
            idle = time.monotonic() - self.last_activity
            if self.idle_exit and not self.active and idle >= self.idle_exit:
                log.send(f"status service idle for {idle:.0f} s: exiting (the socket starts "
                         "it again)")
                self.stopping.set()
                return

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.last_activity = time.monotonic()
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            writer.close()
            return
        if self.active >= MAX_CONNECTIONS or self.per_uid.get(uid, 0) >= MAX_CONNECTIONS_PER_UID:
            await self.send(writer, format_error(BUSY, "status service busy, try again later"))
            return
        self.active += 1
        self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
        try:
            try:
                reply = await asyncio.wait_for(self.exchange(reader, uid, pid),
                                               self.request_timeout)
            except TimeoutError:
                reply = format_error(TIMEOUT, f"no complete request within "
                                     f"{self.request_timeout:g} s")
            await self.send(writer, reply)
        finally:
            self.active -= 1
            self.per_uid[uid] -= 1
            if not self.per_uid[uid]:
                del self.per_uid[uid]
            self.last_activity = time.monotonic()

    async def exchange(self, reader: asyncio.StreamReader, uid: int, pid: int) -> bytes:
        parser = RequestParser()
        try:
            request = None
            while request is None:
                request = parser.feed(await reader.read(4096))
        except ProtocolError as e:
            return format_error(e.code, e.message)
        except OSError:
            return b""  # the client is gone
        try:
            return self.service.handle(request, uid, pid)
        except Exception as e:  # a full disk, a bug: a short line for the client, the log gets it
            log.error(f"status: {request.action} {log.printable(request.user)} from uid {uid} "
                      f"failed: {type(e).__name__}: {e}")
            return format_error(INTERNAL, "internal error in the status service (see its log)")

    async def send(self, writer: asyncio.StreamWriter, reply: bytes) -> None:
        """Write the reply (bounded in time), close. Unread input at close makes the kernel
        report ECONNRESET to the client after it has read the reply; clients expect that."""
        try:
            if reply:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self.request_timeout)
        except (OSError, TimeoutError):
            pass
        writer.close()


def bind(path: str) -> socket.socket:
    """Listen on ``path`` ourselves (no systemd): mode 0666, as fingerd-status.socket does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # a socket left by a server that is gone
            else:
                raise OSError(f"{path}: another status service is listening")
            finally:
                probe.close()
        sock.bind(path)
        os.chmod(path, 0o666)  # noqa: S103 (anyone may connect; SO_PEERCRED says who)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(socket_path: str | None, state_dir: str | None, idle_exit: float | None,
         request_timeout: float) -> int:
    """Run until SIGTERM, SIGINT or idleness. Returns the exit status."""
    directory = state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0] \
        or DEFAULT_STATE_DIR
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        print(f"fingerd status-server: {directory}: not a writable directory", file=sys.stderr)
        return 1
    store = Store(directory)
    removed = store.sweep(time.time())
    if removed:
        log.send(f"status service: removed {removed} expired status(es) or leftover file(s)")
    passed = systemd_sockets()  # sd_listen_fds(3): fingerd-status.socket's one socket
    if len(passed) > 1:
        print(f"fingerd status-server: expected one socket from systemd, got {len(passed)}",
              file=sys.stderr)
        return 1
    listener = passed[0] if passed else None
    bound = None
    if listener is None:
        bound = socket_path or DEFAULT_SOCKET
        try:
            listener = bind(bound)
        except OSError as e:
            print(f"fingerd status-server: cannot listen on {bound}: {e.strerror or e}",
                  file=sys.stderr)
            return 1
        if idle_exit is None:
            idle_exit = 0.0  # nobody would start us again
    server = Server(StatusService(store), request_timeout,
                    IDLE_EXIT if idle_exit is None else idle_exit)
    try:
        asyncio.run(server.run(listener))
    finally:
        if bound is not None:
            try:  # noqa: SIM105
                os.unlink(bound)
            except OSError:
                pass
    return 0
