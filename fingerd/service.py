"""The finger service: one query line in, one reply out. The part that never changes.

As in the Twisted tutorial, no front end knows where answers come from: the service parses the
query, applies the server's policy (refusals, anti-enumeration), asks the backend chain in
order and renders whatever comes back through the output filter. Every front end — the
per-connection handler, ``fingerd serve``, the web view, the IRC bot — asks it, so they all
answer the same text for the same query.

The service does no I/O and schedules nothing itself. :meth:`FingerService.lookup` returns a
:class:`Lookup`, which walks the chain one :class:`Call` at a time; *how* each call runs (in
this process under an alarm, inline on an event loop, on a worker thread) is the caller's
choice, made by a runner (fingerd/handler.py, fingerd/pool.py). :meth:`FingerService.respond`
is the whole walk for a caller that may block.

Nothing a client sends and nothing a backend does makes the service raise: a bug in it is
logged and answered ``Finger service unavailable``.
"""

from fingerd import log
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
    from collections.abc import Callable, Sequence

    from fingerd.backend import Backend
    from fingerd.config import ServerConfig

    # Runs one call and returns its answer; raises whatever the call raised, or TimeoutError.
    Runner = Callable[["Call"], str | None]

# The outcome of a query, as logged (FINGER_OUTCOME). The service decides the first five; the
# front ends add the last three (fingerd/session.py).
ANSWERED = "answered"
NO_SUCH_USER = "no such user"
DENIED = "denied"
INVALID = "invalid"
ERROR = "error"
TIMEOUT = "timeout"  # the client sent no query in time
DISCONNECTED = "disconnected"  # the client left before it had the answer
BUSY = "busy"  # refused: over a connection or rate limit


class Reply:
    """What to send (``data``: wire bytes, already filtered) and what to log about it.

    ``outcome`` is what the journal records; ``public_outcome`` is what the client may learn:
    with ``[server] conceal_unknown`` an unknown user is ``no such user`` in the journal but
    ``answered`` to the client (the web view picks its HTTP status from this one).
    """

    __slots__ = ("backend", "data", "outcome", "public_outcome", "query")

    def __init__(self, data: bytes, outcome: str, query: "Query | None" = None,
                 backend: str = "", public_outcome: str | None = None) -> None:
        self.data = data
        self.outcome = outcome
        self.query = query
        self.backend = backend
        self.public_outcome = outcome if public_outcome is None else public_outcome

    def __repr__(self) -> str:
        return f"Reply({self.data!r}, {self.outcome!r}, backend={self.backend!r})"


def unavailable() -> "Reply":
    """The reply when the service cannot answer at all (a broken config, a bug)."""
    return Reply(reply_line(UNAVAILABLE), ERROR)


class Call:
    """One backend method to run for one query: what a runner schedules.

    ``blocking`` is the backend's own declaration (fingerd/backend.py): a runner may run a
    non-blocking call inline, on an event loop, without any timer.
    """

    __slots__ = ("blocking", "function", "name", "query", "timeout")

    def __init__(self, name: str, function: "Callable[[Query], str | None]", query: "Query",
                 blocking: bool, timeout: float) -> None:
        self.name, self.function, self.query = name, function, query
        self.blocking, self.timeout = blocking, timeout

    def run(self) -> str | None:
        return self.function(self.query)


class FingerService:
    """The configured finger service: the ``[server]`` policy and the backend chain.

    ``chain`` is a sequence of (name, backend) pairs, asked in order (``build_chain`` in
    fingerd/backends/__init__.py makes it from the config). The service builds nothing and
    runs nothing by itself.
    """

    def __init__(self, server: "ServerConfig", chain: "Sequence[tuple[str, Backend]]",
                 path: str = "", broken: str = "") -> None:
        self.server = server
        self.chain = tuple(chain)
        self.path = path  # the config file it came from, for log lines
        # Why the configuration cannot be used, if it cannot: every query is then answered
        # "Finger service unavailable" (a long-running front end waits for a good one).
        self.broken = broken

    def lookup(self, line: bytes, remote: str = "") -> "Lookup":
        """Start answering one raw query line from the client at ``remote``."""
        return Lookup(self, line, remote)

    def respond(self, line: bytes, runner: "Runner | None" = None, remote: str = "") -> "Reply":
        """The whole reply to ``line``, running every call with ``runner`` (which may block;
        None: each call runs right here, without a time limit)."""
        lookup = Lookup(self, line, remote)
        while (call := lookup.next_call()) is not None:
            try:
                answer = runner(call) if runner is not None else call.run()
            except BaseException as e:
                lookup.failed(call, e)
            else:
                lookup.answered(call, answer)
        return lookup.reply_or_error()


class Lookup:
    """One query's way through the policy and the chain, one call at a time (no I/O).

    ``next_call()`` gives the next :class:`Call` to run, or None once ``reply`` is decided;
    the caller reports each call's result with ``answered()`` or ``failed()``. A call that a
    runner gives up on (too slow) is reported as failed with a TimeoutError. A runner on an event
    loop calls ``run_until_blocking()`` instead of ``next_call()``: the calls that do not block
    run at once, and only the blocking ones come back to it.
    """

    __slots__ = ("_failures", "_forward_call", "_host", "_next", "query", "reply", "service")

    def __init__(self, service: "FingerService", line: bytes, remote: str) -> None:
        self.service = service
        self.reply: Reply | None = None
        self.query: Query | None = None
        self._next = 0  # the index of the next backend to ask; -1 for a forward
        self._failures = 0
        try:
            self._start(line, remote)
        except Exception as e:  # a bug: logged, never a traceback to the client
            self._bug(e)

    def _start(self, line: bytes, remote: str) -> None:
        server = self.service.server
        if self.service.broken:
            self.reply = unavailable()
            return
        try:
            self.query = query = parse_query(line, remote)
        except QueryError as e:
            self.reply = Reply(reply_line(e.reply), INVALID)
            return
        if query.is_forward:
            if not server.forwarding:
                self.reply = Reply(reply_line(FORWARDING_DENIED), DENIED, query)
            else:
                self._start_forward(query)
        elif query.is_list and not server.list_users:
            self.reply = Reply(reply_line(LIST_DENIED), DENIED, query)
        elif not self.service.chain:
            self._unknown(query)

    def next_call(self) -> "Call | None":
        """The next call to run, or None when the reply is decided."""
        if self.reply is not None:
            return None
        query = self.query
        assert query is not None
        if self._next < 0:
            return self._forward_call
        name, backend = self.service.chain[self._next]
        method = backend.list_users if query.is_list else backend.lookup
        return Call(name, method, query, backend.blocking, self.service.server.backend_timeout)

    def answered(self, call: "Call", answer: object) -> None:
        """``call`` returned ``answer``."""
        self._answered(call.name, answer)

    def failed(self, call: "Call", error: BaseException) -> None:
        """``call`` raised ``error``, or took too long (a TimeoutError from the runner)."""
        self._failed(call.name, error)

    def run_until_blocking(self) -> "Call | None":
        """Run the calls that do not block here and now, without a time limit, as a runner on an
        event loop may; return the first call that blocks, for the runner to schedule, or None
        once the reply is decided; after that call's result is reported, ask again. No
        :class:`Call` is made for a backend that answers here (the long-running front ends
        drive their lookups with this)."""
        chain = self.service.chain
        while self.reply is None:
            if self._next < 0:
                return self._forward_call
            name, backend = chain[self._next]
            if backend.blocking:
                return self.next_call()
            query = self.query
            assert query is not None
            try:
                answer = backend.list_users(query) if query.is_list else backend.lookup(query)
            except BaseException as e:
                self._failed(name, e)
            else:
                self._answered(name, answer)
        return None

    def reply_or_error(self) -> "Reply":
        """The decided reply (after the last call)."""
        if self.reply is None:  # only if a caller stopped early: never silently nothing
            self._bug(RuntimeError("lookup ended without a reply"))
        assert self.reply is not None
        return self.reply

    # -- the chain ----------------------------------------------------------------------------

    def _answered(self, name: str, answer: object) -> None:
        if self.reply is not None:
            return
        try:
            if answer is not None and not isinstance(answer, str):
                self._failed(name, TypeError(f"returned {type(answer).__name__}, "
                                             "not str or None"))
            elif self._next < 0:
                self._forwarded(answer or "")
            elif answer is None:
                self._ask_next()
            else:
                self._answer(answer, name)
        except Exception as e:
            self._bug(e)

    def _failed(self, name: str, error: BaseException) -> None:
        if self.reply is not None:
            return
        query = self.query
        assert query is not None
        if self._next < 0:
            log.warning(f"forwarding {log.printable(query.text())!r} failed: {reason(error)}")
            self.reply = Reply(reply_line(UNAVAILABLE), ERROR, query, "forward")
            return
        self._failures += 1
        log.warning(f"backend {log.printable(name)} failed for "
                    f"{log.printable(query.text())!r}: {reason(error)}", FINGER_BACKEND=name)
        self._ask_next()

    def _ask_next(self) -> None:
        self._next += 1
        if self._next < len(self.service.chain):
            return
        query = self.query
        assert query is not None
        if self._failures == len(self.service.chain):
            self.reply = Reply(reply_line(UNAVAILABLE), ERROR, query)
        else:
            self._unknown(query)

    def _unknown(self, query: "Query") -> None:
        server = self.service.server
        if query.is_list:
            self.reply = Reply(reply_line(server.no_information), NO_SUCH_USER, query)
        elif server.conceal_unknown:
            # Exactly what a known user with nothing to say gets; only the journal knows.
            self.reply = Reply(reply_line(server.no_information), NO_SUCH_USER, query,
                               public_outcome=ANSWERED)
        else:
            self.reply = Reply(reply_line(server.no_such_user), NO_SUCH_USER, query)

    def _answer(self, answer: str, backend: str) -> None:
        server = self.service.server
        if not answer.strip():
            self.reply = Reply(reply_line(server.no_information), ANSWERED, self.query, backend)
            return
        data = render(answer, max_bytes=server.max_answer_bytes, ascii_only=server.ascii_only)
        self.reply = Reply(data, ANSWERED, self.query, backend)

    # -- forwarding (RFC 1288 §2.4), only with [server] forwarding = true -------------------

    def _start_forward(self, query: "Query") -> None:
        from fingerd.forward import MAX_HOPS, forward

        if len(query.hosts) > MAX_HOPS:
            log.warning(f"refusing to forward {log.printable(query.text())!r}: more than "
                        f"{MAX_HOPS} hosts")
            self.reply = Reply(reply_line(FORWARDING_DENIED), DENIED, query)
            return
        host, rest = query.next_hop()
        server = self.service.server
        self._host = host

        def ask(q: "Query") -> str:
            return forward(host, q.text(), timeout=server.backend_timeout,
                           max_bytes=server.max_answer_bytes)

        self._next = -1
        # Blocking: a name lookup and a connection. The runner bounds the name lookup too,
        # which a socket timeout does not.
        self._forward_call = Call("forward", ask, rest, True, server.backend_timeout)

    def _forwarded(self, answer: str) -> None:
        server = self.service.server
        data = render(f"[{self._host}]\n{answer}", max_bytes=server.max_answer_bytes,
                      ascii_only=server.ascii_only)
        self.reply = Reply(data, ANSWERED, self.query, "forward")

    def _bug(self, error: Exception) -> None:
        log.error(f"internal error: {reason(error)}")
        self.reply = Reply(reply_line(UNAVAILABLE), ERROR, self.query)


def reason(error: BaseException) -> str:
    """An exception as one log phrase: its type, and its message if it has one (and if it
    can be had: a plugin's exception may fail to say what it is)."""
    try:
        text = str(error)
    except Exception:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
