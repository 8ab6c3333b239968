"""One request to the status service, one reply: what ``fingerd status`` and the ``status``
backend both send over ``/run/fingerd/status.sock`` (fingerd/status_protocol.py says what).

On the per-connection hot path (the backend): only the built-in ``_socket``.
"""

from __future__ import annotations

import _socket
import time

from fingerd.status_protocol import MAX_REPLY_BYTES, Reply, parse_reply


class Unreachable(OSError):
    """Nothing to connect to at the socket's path (the ``errno`` says why)."""


def exchange(path: str, request: bytes, timeout: float) -> Reply:
    """Send ``request`` and read the whole reply, within ``timeout`` seconds in all.

    Raises :class:`Unreachable` when the service cannot be connected to, TimeoutError,
    another OSError, or fingerd.status_protocol.ProtocolError for a reply that does not parse.
    """
    deadline = time.monotonic() + timeout
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise Unreachable(e.errno, e.strerror) from None
        try:
            sock.sendall(request)
            sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass  # the service answered early (busy) and closed: its reply is readable
        data = b""
        try:
            while len(data) <= MAX_REPLY_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(MAX_REPLY_BYTES + 1)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise
        except OSError:
            if not data:
                raise
            # a reset after the reply (the request had bytes the service did not read): keep it
    finally:
        sock.close()
    return parse_reply(data)
