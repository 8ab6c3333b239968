"""Who may hold a connection in ``fingerd serve`` and ``fingerd web``, and how much memory
answers may hold.

One process serves everybody, so no client may take it all:

- **Per source**: at most ``[server] max_connections_per_source`` connections from one source
  (an IPv4 address, or an IPv6 /64: one host usually has a whole /64 to pick addresses from).
- **In all**: at most ``[server] max_connections``. When the table is full, a newcomer from a
  source that holds no connection displaces one of the source that holds the most (if that
  source holds at least two): its oldest connection still waiting for its query line, or
  else its newest lookup still waiting for a worker thread (the oldest is next to get one).
  So a few addresses with many idle connections, or with many lookups queued behind a slow
  upstream, cannot keep everybody else out until their timeouts run out. Otherwise the
  newcomer is told the server is busy. (``fingerd web`` displaces nobody: its caller says no
  connection may be displaced, and a newcomer gets 503.)
- **Unsent answers**: answers that clients do not read stay in memory until the write timeout.
  What they hold in all is bounded by ``[server] max_unsent_bytes`` (never less than one
  ``max_answer_bytes``): an answer over 64 KiB (``fingerd.session.DRAIN_BYTES``; a smaller one
  is sent in any case) that would take the total over it is not sent: ``fingerd serve`` tells
  the client the server is busy, ``fingerd web`` closes the connection. An answer counts with
  its whole size while any of it waits to be sent (in ``fingerd serve`` any answer the socket
  did not take at once, in ``fingerd web`` those over 64 KiB).
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from fingerd.config import ServerConfig

    class Holder(Protocol):
        source: str

def source_key(address: str) -> str:
    """What the per-source cap counts: an IPv4 address, or an IPv6 /64."""
    if ":" not in address:
        return address
    try:
        return socket.inet_pton(socket.AF_INET6, address)[:8].hex() + "::/64"
    except OSError:
        return address


class Admission:
    """The connection table's caps (see the module docstring). ``displaceable(holder)``: 2, the
    connection still waits for its query line; 1, its lookup still waits for a thread; 0, it
    may not be displaced."""

    def __init__(self, limits: ServerConfig, displaceable: Callable[[Holder], int]) -> None:
        self.displaceable = displaceable
        self.admitted = 0
        # Per source, its connections in order of arrival (dicts keep it).
        self.by_source: dict[str, dict[int, Holder]] = {}
        self.unsent = 0
        self.update(limits)

    def update(self, limits: ServerConfig) -> None:
        """The limits of ``[server]`` (again after a reload; admitted connections stay)."""
        self.max_connections = limits.max_connections
        self.per_source = limits.max_connections_per_source
        self.budget = max(limits.max_unsent_bytes, limits.max_answer_bytes)

    def admit(self, holder: Holder) -> tuple[bool, Holder | None]:
        """Whether ``holder`` gets a slot, and the connection it displaces, if any (that one is
        released here; the caller tells it the server is busy)."""
        held = self.by_source.get(holder.source)
        count = len(held) if held else 0
        if count >= self.per_source:
            return False, None
        victim = None
        if self.admitted >= self.max_connections:
            victim = None if count else self._victim()
            if victim is None:
                return False, None
            self.release(victim)
        if held is None:
            held = self.by_source[holder.source] = {}
        held[id(holder)] = holder
        self.admitted += 1
        return True, victim

    def _victim(self) -> Holder | None:
        """Of the source that holds the most, if it holds two or more: its oldest connection
        waiting for its query, or else its newest queued lookup. A scan over the sources and
        that source's connections: only when the table is full."""
        top = max(self.by_source.values(), key=len, default=None)
        if top is None or len(top) < 2:
            return None
        queued = None
        for holder in top.values():
            rank = self.displaceable(holder)
            if rank == 2:
                return holder
            if rank:
                queued = holder
        return queued

    def release(self, holder: Holder) -> None:
        held = self.by_source.get(holder.source)
        if held is None or held.pop(id(holder), None) is None:
            return
        self.admitted -= 1
        if not held:
            del self.by_source[holder.source]

    def may_hold(self, size: int) -> bool:
        """Whether ``size`` more unsent bytes fit in the budget."""
        return self.unsent + size <= self.budget
