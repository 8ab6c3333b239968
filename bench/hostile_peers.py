"""The hostile side of bench/hostile.py: a dripping HTTP upstream, looping clients, probes,
clients that never read, and connection holders. Loopback only; every loop is bounded in
count and in time.

Client sockets bind a source address in 127.0.0.0/8 (all of it is loopback on Linux), so that
one process can be many sources to the server's per-source caps.

The connection holders run in a process of their own (``python3 bench/hostile_peers.py hold
...``): 2000 sockets reconnecting in a Python loop would otherwise take the GIL from the probe
whose latency is being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import selectors
import socket
import sys
import threading
import time
from collections import Counter

ANSWER = b"Happy and well\r\n"
BUSY = b"Finger service busy, try again later\r\n"
UNAVAILABLE = b"Finger service unavailable\r\n"
TIMED_OUT = b"Timed out waiting for the finger query\r\n"
QUICK = b"fresh answer for quick\r\n"  # what the upstream answers at once for `quick`
MAX_PROBES = 100_000
MAX_READ = 64 * 1024 * 1024


# -- the upstream: an HTTP server on loopback that drips ----------------------------------------


class Upstream:
    """HTTP on loopback, on an asyncio loop in a thread of its own: ``/status/slow*`` gets a
    header promising 100 bytes, then one byte a second (at most 100 s); anything else
    ``fresh answer for NAME`` at once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.requests: Counter[str] = Counter()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("the upstream did not start")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status/{{user}}"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024))
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head.split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            if path.startswith(b"/status/slow"):
                self.requests["slow"] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 100\r\n\r\n")
                for _ in range(100):
                    await writer.drain()
                    await asyncio.sleep(1)
                    writer.write(b"x")
            else:
                self.requests["quick"] += 1
                body = b"fresh answer for " + path.rsplit(b"/", 1)[-1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                             b"%d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (OSError, EOFError, TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# -- one query from one source -----------------------------------------------------------------


def connect_from(source: str, port: int, timeout: float) -> socket.socket:
    s = socket.socket()
    try:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def outcome(data: bytes, expect: bytes) -> str:
    if data == expect:
        return "ok"
    return {BUSY: "busy", UNAVAILABLE: "unavailable", TIMED_OUT: "timed out"}.get(data, "other")


def ask_from(source: str, port: int, query: bytes, expect: bytes, timeout: float,
             live: set[socket.socket] | None = None) -> str:
    """One query from ``source``, read to EOF within ``timeout`` s in all: its outcome (ok,
    busy, unavailable, timed out, other, no answer in time, error). ``live``: where the socket
    is kept while open, so that another thread can shut it down."""
    deadline = time.monotonic() + timeout
    try:
        s = connect_from(source, port, timeout)
    except TimeoutError:
        return "no answer in time"
    except OSError:
        return "error"
    if live is not None:
        live.add(s)
    try:
        with s:
            s.sendall(query)
            chunks, size = [], 0
            while size < MAX_READ:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "no answer in time"
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return outcome(b"".join(chunks), expect)
    except TimeoutError:
        return "no answer in time"
    except OSError:
        return "error"
    finally:
        if live is not None:
            live.discard(s)


class Prober(threading.Thread):
    """The client whose experience is measured: ``query`` from ``source``, one at a time, a
    pause of ``interval`` s between them, for ``seconds`` s (a query started then may take up
    to ``timeout`` s more). ``results``: (started, outcome, seconds waited) per query."""

    def __init__(self, port: int, source: str, query: bytes, expect: bytes, seconds: float,
                 interval: float, timeout: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.query, self.expect = port, source, query, expect
        self.seconds, self.interval, self.timeout = seconds, interval, timeout
        self.results: list[tuple[float, str, float]] = []

    def run(self) -> None:
        t0 = time.perf_counter()
        for _ in range(MAX_PROBES):
            began = time.perf_counter()
            if began - t0 >= self.seconds:
                break
            result = ask_from(self.source, self.port, self.query, self.expect, self.timeout)
            self.results.append((began - t0, result, time.perf_counter() - began))
            time.sleep(self.interval)


class Loopers:
    """``each`` clients per source, each asking ``query`` again as soon as it has its answer
    (after 50 ms when it failed), until :meth:`close`."""

    def __init__(self, port: int, sources: list[str], each: int, query: bytes) -> None:
        self.stop = threading.Event()
        self.live: set[socket.socket] = set()
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(port, source, query),
                                         daemon=True)
                        for source in sources for _ in range(each)]
        for thread in self.threads:
            thread.start()

    def _loop(self, port: int, source: str, query: bytes) -> None:
        for _ in range(MAX_PROBES):
            if self.stop.is_set():
                return
            result = ask_from(source, port, query, b"", 15.0, self.live)
            with self.lock:
                self.outcomes[result] += 1
            if result in ("error", "busy"):
                self.stop.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        for s in list(self.live):  # wakes a thread blocked in recv()
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(20)


# -- clients that ask for a large answer and never read it --------------------------------------


def stalled_clients(port: int, sources: list[str], each: int, query: bytes,
                    deadline: float) -> list[socket.socket]:
    """``each`` connections per source that send ``query`` and never read (a 4 KiB receive
    buffer), opened in turn until ``deadline``."""
    socks = []
    for n in range(len(sources) * each):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.bind((sources[n % len(sources)], 0))
            s.connect(("127.0.0.1", port))
            s.sendall(query)
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def first_bytes(socks: list[socket.socket], answer_start: bytes) -> Counter[str]:
    """What each stalled client has been sent so far: the answer, busy, or nothing yet."""
    seen: Counter[str] = Counter()
    for s in socks:
        try:
            head = s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            head = b""
        except OSError:
            head = b"!"
        if head.startswith(answer_start):
            seen["answer"] += 1
        elif BUSY.startswith(head[:len(BUSY)]) and head:
            seen["busy"] += 1
        elif head == b"!":
            seen["error"] += 1
        else:
            seen["nothing"] += 1
    return seen


# -- connection holders (a process of their own) ------------------------------------------------


def hold(port: int, sources: list[str], each: int, mode: str, seconds: float,
         pause: float) -> dict[str, int]:
    """Keep ``each`` connections per source open for ``seconds``: send nothing (``idle``) or one
    byte of a query that never ends every second (``dribble``). A connection the server
    closes is opened again after ``pause`` s. Prints ``ready`` once all were opened once."""
    sel = selectors.EpollSelector()
    address = ("127.0.0.1", port)
    conns: dict[int, tuple[socket.socket, str]] = {}
    due: list[tuple[float, str]] = []  # reconnections
    counts: Counter[str] = Counter()
    next_drip = time.monotonic() + 1.0

    def open_one(source: str) -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((source, 0))
            err = s.connect_ex(address)
        except OSError:
            err = errno.EADDRNOTAVAIL
        counts["connects"] += 1
        if err not in (0, errno.EINPROGRESS):
            s.close()
            counts["connect errors"] += 1
            due.append((time.monotonic() + pause, source))
            return
        conns[s.fileno()] = (s, source)
        sel.register(s, selectors.EVENT_READ)

    def closed(fd: int) -> None:
        s, source = conns.pop(fd)
        sel.unregister(s)
        s.close()
        due.append((time.monotonic() + pause, source))

    end = time.monotonic() + seconds
    for n in range(len(sources) * each):
        open_one(sources[n % len(sources)])
    print("ready", flush=True)
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(min(0.1, end - now)):
            fd = key.fd
            s = conns[fd][0]
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                counts["resets"] += 1
                closed(fd)
                continue
            if data:
                counts[outcome(data, ANSWER)] += 1
            else:
                counts["closed by server"] += 1
                closed(fd)
        now = time.monotonic()
        if mode == "dribble" and now >= next_drip:
            next_drip = now + 1.0
            for s, _ in list(conns.values()):
                with contextlib.suppress(OSError):
                    s.send(b"x")
        if due and due[0][0] <= now:
            ready = [source for at, source in due if at <= now]
            due[:] = [(at, source) for at, source in due if at > now]
            for source in ready:
                open_one(source)
    for s, _ in conns.values():
        s.close()
    return dict(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description="connection holders for bench/hostile.py")
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--sources", required=True, help="comma-separated loopback addresses")
    h.add_argument("--each", type=int, required=True)
    h.add_argument("--mode", choices=("idle", "dribble"), default="idle")
    h.add_argument("--seconds", type=float, required=True)
    h.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()
    sources = args.sources.split(",")
    if not all(source.startswith("127.") for source in sources):
        raise SystemExit("hold: loopback sources only")
    counts = hold(args.port, sources, max(1, args.each), args.mode,
                  min(max(0.1, args.seconds), 600.0), max(0.01, args.pause))
    json.dump(counts, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
