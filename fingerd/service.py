"""The finger service: one query line in, one reply out. The part that never changes.

As in the Twisted tutorial, the protocol side does not know where answers come from: it parses
the query, applies the server's policy (refusals, anti-enumeration), asks the backend chain in
order and renders whatever comes back through the output filter. The per-connection handler
(fingerd/handler.py) and the long-running server (fingerd/server.py) both call
:meth:`FingerService.respond`, so they answer the same bytes for the same query.
"""

from __future__ import annotations

from fingerd import log
from fingerd.backends import UnknownBackend, backend_class
from fingerd.config import ConfigError
from fingerd.protocol import (
    FORWARDING_DENIED,
    LIST_DENIED,
    UNAVAILABLE,
    Query,
    QueryError,
    parse_query,
    render,
    reply_line,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fingerd.backend import Backend
    from fingerd.config import Config

    # Runs a backend method with a time limit; raises TimeoutError when it is exceeded.
    Timer = Callable[[Callable[[Query], str | None], Query, float], str | None]

# The outcome of a query, as logged (FINGER_OUTCOME).
ANSWERED = "answered"
NO_SUCH_USER = "no such user"
DENIED = "denied"
INVALID = "invalid"
ERROR = "error"


class Reply:
    """What to send (``data``) and what to log about it."""

    __slots__ = ("backend", "data", "outcome", "query")

    def __init__(self, data: bytes, outcome: str, query: Query | None = None,
                 backend: str = "") -> None:
        self.data = data
        self.outcome = outcome
        self.query = query
        self.backend = backend


def build_backends(config: Config) -> list[tuple[str, Backend]]:
    """Instantiate the configured chain, as (name, backend) pairs, checking every option."""
    chain = []
    for spec in config.backends:
        try:
            cls = backend_class(spec.type)
        except UnknownBackend as e:
            raise spec.options.error("type", str(e)) from None
        except Exception as e:  # a third-party plugin that does not import
            raise spec.options.error("type", f"cannot load backend {spec.type!r}: {e!r}") from None
        try:
            backend = cls(spec.options)
        except ConfigError:
            raise
        except Exception as e:
            raise spec.options.error("type",
                                     f"backend {spec.type!r} failed to start: {e!r}") from None
        spec.options.finish()
        chain.append((spec.name, backend))
    return chain


class FingerService:
    """The configured finger service. ``timer`` limits each backend call (see handler.py)."""

    def __init__(self, config: Config, timer: Timer | None = None) -> None:
        self.config = config
        self.server = config.server
        self.backends = build_backends(config)
        self.timer = timer
        # True if any lookup may block: the long-running server then answers from a thread.
        self.blocking = any(b.blocking for _, b in self.backends) or self.server.forwarding

    def respond(self, line: bytes, remote: str = "") -> Reply:
        """The reply to one raw query line from the client at ``remote`` (``""``: an address
        the front end cannot vouch for). Never raises for anything a client can send."""
        try:
            query = parse_query(line)
        except QueryError as e:
            return Reply(reply_line(e.reply), INVALID)
        if remote:
            query = query.asked_by(remote)
        if query.is_forward:
            if not self.server.forwarding:
                return Reply(reply_line(FORWARDING_DENIED), DENIED, query)
            return self._forward(query)
        if query.is_list and not self.server.list_users:
            return Reply(reply_line(LIST_DENIED), DENIED, query)
        return self._ask_chain(query)

    def _ask_chain(self, query: Query) -> Reply:
        server = self.server
        failures = 0
        for name, backend in self.backends:
            method = backend.list_users if query.is_list else backend.lookup
            try:
                answer = self._timed(method, query)
                if answer is not None and not isinstance(answer, str):
                    raise TypeError(f"returned {type(answer).__name__}, not str or None")
            except Exception as e:
                failures += 1
                log.warning(f"backend {name} failed for {query.text()!r}: {_reason(e)}",
                            FINGER_BACKEND=name)
                continue
            if answer is not None:
                if not answer.strip():
                    return Reply(reply_line(server.no_information), ANSWERED, query, name)
                data = render(answer, max_bytes=server.max_answer_bytes,
                              ascii_only=server.ascii_only)
                return Reply(data, ANSWERED, query, name)
        if failures and failures == len(self.backends):
            return Reply(reply_line(UNAVAILABLE), ERROR, query)
        if query.is_list:
            return Reply(reply_line(server.no_information), NO_SUCH_USER, query)
        text = server.no_information if server.conceal_unknown else server.no_such_user
        return Reply(reply_line(text), NO_SUCH_USER, query)

    def _timed(self, method: Callable[[Query], str | None], query: Query) -> str | None:
        """``method(query)`` within ``[server] backend_timeout``, when a timer was given."""
        if self.timer is None:
            return method(query)
        return self.timer(method, query, self.server.backend_timeout)

    def _forward(self, query: Query) -> Reply:
        """RFC 1288 §2.5.1: pass ``user@host1@host2`` on to host2 as ``user@host1``."""
        from fingerd.forward import MAX_HOPS, forward

        if len(query.hosts) > MAX_HOPS:
            log.warning(f"refusing to forward {query.text()!r}: more than {MAX_HOPS} hosts")
            return Reply(reply_line(FORWARDING_DENIED), DENIED, query)
        host, rest = query.next_hop()
        server = self.server

        def ask(q: Query) -> str:
            return forward(host, q.text(), timeout=server.backend_timeout,
                           max_bytes=server.max_answer_bytes)

        try:
            answer = self._timed(ask, rest)  # bounds the name lookup too, as sockets do not
        except OSError as e:
            log.warning(f"forwarding {query.text()!r} to {host} failed: {_reason(e)}")
            return Reply(reply_line(UNAVAILABLE), ERROR, query, "forward")
        data = render(f"[{host}]\n{answer}", max_bytes=self.server.max_answer_bytes,
                      ascii_only=self.server.ascii_only)
        return Reply(data, ANSWERED, query, "forward")


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
