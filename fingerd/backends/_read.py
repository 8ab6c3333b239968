"""Bounded reads for the backends that read files people control (``file``, ``local``)."""

import os


def read_capped(fd: int, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from ``fd``, and whether there was more: never the whole of a file
    someone made huge (or endless, like a device)."""
    chunks = []
    left = limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit
