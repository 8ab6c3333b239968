"""Flood control: what the bot sends, when, and for whom. No I/O; the client asks it.

IRC servers disconnect clients that send too much too fast ("Excess Flood": solanum on Libera,
InspIRCd, UnrealIRCd), or stop reading them for a while (ngircd: after 3 commands in one
turn or 256 bytes in a second, it ignores the client for a second, so a bot with a backlog
there answers PINGs late). So however many people ask, the bot sends through a token bucket:
``burst`` lines at once, then one every ``interval`` seconds.

What waits is queued per asker and sent round-robin, so one person asking for a long answer
(or many answers) delays the others by one line per turn, not by their whole backlog. The
queue is bounded in lines per asker and in all; :meth:`Outbox.admit` tells the bot whether to
take another query from an asker at all. Control lines (PONG, NICK, JOIN, QUIT) go first and
without waiting for a token (a PONG must not wait behind answers), but each takes one, so the
answers after them wait the longer; the client sends them rarely (a NICK to take its own nick
back at most once every few seconds, whatever others do).
"""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """``burst`` tokens, one more every ``interval`` seconds, never more than ``burst``."""

    def __init__(self, burst: int, interval: float, now: float) -> None:
        self.burst, self.interval = burst, interval
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval

    def take(self, now: float) -> None:
        """Spend a token; urgent lines may overdraw (down to one burst below zero), which
        the lines after them pay for."""
        self._refill(now)
        self.tokens = max(self.tokens - 1, -float(self.burst))


class Outbox:
    """Lines waiting to be sent: control lines first, then the askers' lines round-robin."""

    def __init__(self, max_lines: int, max_lines_per_asker: int) -> None:
        self.max_lines, self.max_lines_per_asker = max_lines, max_lines_per_asker
        self.control: deque[bytes] = deque()
        # Per asker, in order; dicts keep the round-robin order: a served asker moves to the end.
        self.queues: dict[str, deque[bytes]] = {}
        self.lines = 0  # askers' lines queued, in all

    def __len__(self) -> int:
        return len(self.control) + self.lines

    def queued(self, asker: str) -> int:
        queue = self.queues.get(asker)
        return len(queue) if queue else 0

    def admit(self, asker: str, lines: int = 1) -> bool:
        """May ``lines`` more lines be queued for ``asker``? (It has room of its own, and the
        outbox has room in all.)"""
        return (self.queued(asker) + lines <= self.max_lines_per_asker
                and self.lines + lines <= self.max_lines)

    def put(self, asker: str, lines: list[bytes]) -> int:
        """Queue ``lines`` for ``asker``, as many as fit; returns how many were dropped."""
        room = min(self.max_lines_per_asker - self.queued(asker), self.max_lines - self.lines)
        kept = lines[:max(0, room)]
        if kept:
            self.queues.setdefault(asker, deque()).extend(kept)
            self.lines += len(kept)
        return len(lines) - len(kept)

    def put_control(self, line: bytes) -> None:
        self.control.append(line)

    def pop(self) -> bytes | None:
        """The next line to send, or None."""
        if self.control:
            return self.control.popleft()
        for asker in self.queues:
            queue = self.queues.pop(asker)
            line = queue.popleft()
            if queue:
                self.queues[asker] = queue  # to the end: round-robin
            self.lines -= 1
            return line
        return None

    def clear(self) -> None:
        """The connection is gone: what was queued for it will not be sent."""
        self.control.clear()
        self.queues.clear()
        self.lines = 0
