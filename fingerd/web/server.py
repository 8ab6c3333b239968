"""``fingerd web``: the web view and WebFinger, one long-running asyncio process.

Started by ``fingerd-web.socket`` (``Accept=no``: the listening sockets come from systemd,
``LISTEN_FDS``) or by hand with ``--listen``. This module is the process: the listeners, the
caps on connections (the same as ``fingerd serve``'s, fingerd/admission.py), the worker pool
for blocking backends (fingerd/aio.py), SIGHUP (reload the config, keep the old one on any
error) and SIGTERM (stop listening, finish the requests in flight, exit 0). Each connection is
fingerd/web/connection.py.

Why one process and not one per connection (``Accept=yes``), measured in README.md ("The web
view and WebFinger"): importing h11 and asyncio costs several times a bare interpreter's start,
a sandboxed per-connection instance costs systemd about 30 ms of set-up on top, and behind a
reverse proxy one page view may be several requests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time

from fingerd import log
from fingerd.admission import Admission, source_key
from fingerd.aio import AsyncPool
from fingerd.backends import service_from
from fingerd.config import ConfigError, Options, load
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
from fingerd.protocol import BUSY as BUSY_TEXT
from fingerd.protocol import client_address
from fingerd.service import BUSY, DISCONNECTED
from fingerd.web.connection import Connection
from fingerd.web.pages import plain
from fingerd.web.settings import WebSettings

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from fingerd.service import FingerService

DEFAULT_LISTEN = "127.0.0.1:8079"


class WebServer:
    """The listeners, the current service and settings (swapped on SIGHUP), the connections."""

    def __init__(self, config_path: str | None, service: FingerService,
                 settings: WebSettings) -> None:
        self.config_path, self.service, self.settings = config_path, service, settings
        # No connection is displaced to make room (the callback says none may be): a full
        # table answers newcomers 503, and read_timeout frees it.
        self.admission = Admission(service.server, lambda connection: 0)
        self.connections: dict[asyncio.Task[None], Connection] = {}
        self.proxied = itertools.count()
        self.stopping = False
        self.pool: AsyncPool | None = None

    def reload(self, retry: bool = False) -> None:
        """SIGHUP: a new config for new requests; on any error keep the old one. ``retry``:
        the periodic attempt while the configuration is broken, which logs only a change."""
        result = reloaded(self.config_path, self.service,
                          lambda config: WebSettings(config.frontends["web"]), retry=retry,
                          answer="503 Finger service unavailable")
        if result is None:
            return
        service, settings = result
        self.service = service
        if settings is None:
            return
        self.settings = settings
        self.admission.update(service.server)
        log.send(f"configuration reloaded from {service.path}")

    async def run(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        self.pool = AsyncPool(loop)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        servers = [await asyncio.start_server(self.accept, sock=sock) for sock in sockets]
        log.send(f"serving the web view on {', '.join(socket_name(s) for s in sockets)} "
                 f"with {self.service.path}")
        notify("READY=1")
        retry = loop.create_task(self.retry()) if self.service.broken else None
        await stop.wait()
        if retry is not None:
            retry.cancel()
        notify("STOPPING=1")
        self.stopping = True
        for server in servers:
            server.close()  # no new connections
        for task, connection in list(self.connections.items()):
            if connection.waiting:
                task.cancel()  # idle between requests: nothing in flight to finish
        policy = self.service.server
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=policy.read_timeout + 1
                               + policy.backend_timeout * len(self.service.chain))
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        self.pool.shutdown()
        log.send("stopped")

    async def retry(self) -> None:
        """With a broken configuration (every request answered 503): try it again every
        RETRY_SECONDS, so that the server recovers by itself once the file is fixed."""
        while self.service.broken:
            await asyncio.sleep(RETRY_SECONDS)
            self.reload(retry=True)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection (asyncio runs each in a task of its own)."""
        task = asyncio.current_task()
        assert task is not None
        peer = client_address(writer.get_extra_info("peername"))
        # Behind a proxy every connection comes from the proxy: not one source for the caps.
        trusted = self.settings.trusts(peer)
        source = f"proxy#{next(self.proxied)}" if trusted else source_key(peer)
        connection = Connection(self, reader, writer, peer, source, trusted)
        admitted, _ = self.admission.admit(connection)
        try:
            if not admitted:
                started = time.monotonic()
                response = plain(503, BUSY_TEXT, close=True, extra=(("Retry-After", "1"),))
                sent = await connection.send(response, head=False)
                connection.record(peer, "", None, "", BUSY if sent else DISCONNECTED, started)
                return
            self.connections[task] = connection
            await connection.run()
        except asyncio.CancelledError:
            pass  # stopping: the connection is closed below
        except Exception as e:  # a bug: logged, never a traceback to the client
            log.error(f"internal error serving {peer}: {type(e).__name__}: {e}")
        finally:
            self.connections.pop(task, None)
            if admitted:
                self.admission.release(connection)
            await connection.close()


def serve_web(config_path: str | None, listen: list[str], user: str | None) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it
    # A broken configuration does not stop the server (under systemd the start limit would
    # leave its socket failed): it answers 503 and tries again (see fingerd/server.py).
    try:
        config = load(config_path)
        service = service_from(config)
        settings = WebSettings(config.frontends["web"])
    except ConfigError as e:
        log.error(f"configuration error, answering 503 until it is fixed: {e}")
        service = unavailable_service(e.path, e)
        settings = WebSettings(Options({}, e.path, "web"))
    try:
        sockets = listening_sockets(listen, DEFAULT_LISTEN)
        drop_privileges(user)
    except UsageError as e:
        print(f"fingerd web: {e}", file=sys.stderr)
        return 2
    server = WebServer(config_path, service, settings)
    asyncio.run(server.run(sockets))
    stuck = server.pool.pool.busy() if server.pool else 0
    if stuck:  # backend calls hanging beyond every time limit: as fingerd serve, do not wait
        log.warning(f"exiting with {stuck} backend call(s) still running")
        sys.stderr.flush()
        os._exit(0)
    return 0
