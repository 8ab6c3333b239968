"""A bounded finger load generator: loopback only, a fixed number of requests, a time limit.

One process, one thread, epoll: ``concurrency`` connections in flight, each one query (connect,
send, read to EOF, close), a new one started as each finishes, until ``count`` are done or
``duration`` seconds have passed. Prints one JSON object: requests done, errors, wrong answers,
elapsed time, latency percentiles, and the client's own CPU time, so that a run limited by the
client rather than by the server can be recognised (its CPU time is close to the elapsed time).

    python3 bench/loadgen.py --port 1079 --concurrency 64 --count 20000
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import resource
import select
import socket
import sys
import time

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(host: str, port: int, query: bytes, expect: bytes | None, concurrency: int,
        count: int, duration: float) -> dict[str, object]:
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"loadgen: {host} is not a loopback address; refusing")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = (host, port)
    epoll = select.epoll()
    conns: dict[int, tuple[socket.socket, float, list[bytes]]] = {}
    latencies: list[float] = []
    started = errors = wrong = 0
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    clock = time.perf_counter

    def start() -> None:
        nonlocal started
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        began = clock()
        started += 1
        err = sock.connect_ex(address)
        fd = sock.fileno()
        conns[fd] = (sock, began, [])
        if err == 0:
            sock.send(query)
            epoll.register(fd, EPOLLIN)
        elif err == errno.EINPROGRESS:
            epoll.register(fd, EPOLLOUT)
        else:
            finish(fd, failed=True)

    def finish(fd: int, failed: bool = False) -> None:
        nonlocal errors, wrong
        sock, began, chunks = conns.pop(fd)
        with contextlib.suppress(OSError, ValueError):
            epoll.unregister(fd)
        sock.close()
        if failed:
            errors += 1
            return
        latencies.append(clock() - began)
        if expect is not None and b"".join(chunks) != expect:
            wrong += 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = clock()
    deadline = t0 + duration
    for _ in range(min(concurrency, count)):
        start()
    while conns:
        now = clock()
        if now > deadline:
            for fd in list(conns):
                finish(fd, failed=True)
            break
        for fd, events in epoll.poll(min(1.0, deadline - now)):
            entry = conns.get(fd)
            if entry is None:
                continue
            sock = entry[0]
            try:
                if events & EPOLLOUT:
                    sock.send(query)
                    epoll.modify(fd, EPOLLIN)
                    continue
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                finish(fd, failed=True)
            else:
                if data:
                    entry[2].append(data)
                    continue
                finish(fd)
            if started < count and clock() < deadline:
                start()
    elapsed = clock() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    return {
        "requests": len(latencies), "errors": errors, "wrong": wrong, "elapsed": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--query", default="moshez")
    parser.add_argument("--expect", default="Happy and well",
                        help="the answer's first line; empty: do not check")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="time limit, seconds")
    args = parser.parse_args()
    expect = (args.expect + "\r\n").encode() if args.expect else None
    result = run(args.host, args.port, (args.query + "\r\n").encode(), expect,
                 max(1, args.concurrency), max(1, args.count), max(0.1, args.duration))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
