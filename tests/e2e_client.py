"""Finger clients that the end-to-end test copies into the container and runs there.

Standard library only, for Debian's python3 in the container; prints one JSON object.

    python3 e2e_client.py flood HOST COUNT THREADS   COUNT connections as fast as THREADS allow
    python3 e2e_client.py silent HOST                connect, send nothing, wait for the server
    python3 e2e_client.py inflight HOST CMD...       connect, run CMD, then send the query

Every loop is bounded: COUNT connections in all, a deadline for the whole run and a timeout on
every socket.
"""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys
import threading
import time

PORT = 79
SOCKET_TIMEOUT = 5.0
FLOOD_DEADLINE = 120.0


def one_query(host: str) -> str:
    """One connection: send a query, read to EOF. Returns how it ended."""
    try:
        with socket.create_connection((host, PORT), timeout=SOCKET_TIMEOUT) as s:
            s.sendall(b"moshez\r\n")
            data = b""
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return "refused"  # nothing listens on the port any more: what the trigger limit does
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return f"error:{e.errno}"
    # Closed without an answer: accepted and dropped at once (over MaxConnections=).
    return "answered" if data else "closed"


def flood(host: str, count: int, threads: int) -> dict[str, object]:
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    tickets = iter(range(count))
    start = time.monotonic()
    deadline = start + FLOOD_DEADLINE

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                if next(tickets, None) is None:
                    return
            outcome = one_query(host)
            with lock:
                outcomes[outcome] += 1

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()) + SOCKET_TIMEOUT * 3)
    elapsed = time.monotonic() - start
    done = sum(outcomes.values())
    return {"connections": done, "seconds": round(elapsed, 2),
            "per_second": round(done / elapsed, 1), "outcomes": dict(outcomes)}


def silent(host: str) -> dict[str, object]:
    """Connect and send nothing; report how long until the server hung up, and our port."""
    start = time.monotonic()
    with socket.create_connection((host, PORT), timeout=60) as s:
        port = s.getsockname()[1]
        try:
            data = s.recv(4096)
            while data and time.monotonic() - start < 60:
                data = s.recv(4096)
            ended = "closed"
        except TimeoutError:
            ended = "timeout"
        except ConnectionResetError:
            ended = "reset"
    return {"local_port": port, "seconds": round(time.monotonic() - start, 2), "ended": ended}


def inflight(host: str, command: list[str]) -> dict[str, object]:
    """A query in flight while ``command`` runs (e.g. ``systemctl stop``): connect, give the
    server time to accept, start the command, send the query only after it began, read the
    answer, then wait for the command (all bounded)."""
    with socket.create_connection((host, PORT), timeout=60) as s:
        time.sleep(0.5)  # accepted by now: the connection is the server's, not the backlog's
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # the command has begun: for systemctl stop, SIGTERM has arrived
        s.sendall(b"moshez\r\n")
        data = b""
        try:
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            data += f"[{type(e).__name__}]".encode()
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return {"answer": data.decode("utf-8", "replace"), "status": proc.returncode,
            "stderr": err.decode("utf-8", "replace")}


def main(argv: list[str]) -> int:
    if argv[:1] == ["flood"] and len(argv) == 4:
        result = flood(argv[1], int(argv[2]), int(argv[3]))
    elif argv[:1] == ["silent"] and len(argv) == 2:
        result = silent(argv[1])
    elif argv[:1] == ["inflight"] and len(argv) >= 3:
        result = inflight(argv[1], argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
