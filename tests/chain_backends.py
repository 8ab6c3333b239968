"""Backends for the chain tests: each behaves one way the contract allows (fingerd/backend.py)."""

from __future__ import annotations

import time

from fingerd.backend import Backend
from fingerd.config import Options
from fingerd.protocol import Query


class Failing(Backend):
    """Raises for every query, as a backend whose server is down would."""

    def __init__(self, options: Options) -> None:
        self.message = options.string("message", "backend is down")

    def lookup(self, query: Query) -> str | None:
        raise RuntimeError(self.message)


class Slow(Backend):
    """Takes `seconds` to answer: longer than backend_timeout, it must count as failed."""

    def __init__(self, options: Options) -> None:
        self.seconds = options.number("seconds")

    def lookup(self, query: Query) -> str | None:
        time.sleep(self.seconds)
        return "too late"


class Echo(Backend):
    """Knows every user and says what it was asked, to check what reaches a backend."""

    blocking = False

    def __init__(self, options: Options) -> None:
        pass

    def lookup(self, query: Query) -> str | None:
        return f"user={query.user} verbose={query.verbose}"


class Unstartable(Backend):
    """Fails in its constructor with something other than a config error."""

    def __init__(self, options: Options) -> None:
        raise OSError("cannot open its database")

    def lookup(self, query: Query) -> str | None:
        return None


class Bytes(Backend):
    """Breaks the contract: returns bytes, not text. It must count as a failure."""

    def __init__(self, options: Options) -> None:
        pass

    def lookup(self, query: Query) -> str | None:
        return b"not text"  # type: ignore[return-value]
