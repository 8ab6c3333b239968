"""Finger forwarding: ``user@host1@host2`` asked of host2 as ``user@host1`` (RFC 1288 §2.4),
only when ``[server] forwarding = true``.

Off by default: a forwarding server lets anyone make it connect to any host's port 79, which
is why RFC 1288 §3.2.1 lets a server refuse it ("Finger forwarding service denied").
"""

import socket
import time

FINGER_PORT = 79
# A query naming more hosts than this is refused: each hop is a connection, and a chain such as
# user@127.0.0.1@127.0.0.1@... would otherwise make a server connect to itself again and again.
MAX_HOPS = 3


def forward(host: str, query: str, *, timeout: float, max_bytes: int) -> str:
    """Send ``query`` to ``host``'s finger port and return its answer (bounded in time and size)."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    with socket.create_connection((host, FINGER_PORT), timeout=timeout) as conn:
        conn.sendall(query.encode("utf-8") + b"\r\n")
        while size <= max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer within {timeout} s")
            conn.settimeout(left)
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
    # The caller filters this like any backend's answer, so undecodable bytes need not survive.
    return b"".join(chunks)[:max_bytes].decode("utf-8", "replace")
