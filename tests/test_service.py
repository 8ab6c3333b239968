"""The chain: backends asked in order, failures and timeouts logged and skipped."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fingerd import backends
from fingerd.backends import service_from
from fingerd.config import Config, ConfigError, load
from fingerd.handler import alarm_runner, with_alarm
from fingerd.protocol import FORWARDING_DENIED, UNAVAILABLE
from fingerd.service import ANSWERED, DENIED, ERROR, NO_SUCH_USER, FingerService, Reply

ECHO = '[[backend]]\ntype = "echo"\n'
FAILING = '[[backend]]\ntype = "failing"\n'
STATIC = '[[backend]]\ntype = "static"\n[backend.users]\nmoshez = "Happy and well"\n'


@pytest.fixture(autouse=True)
def register_test_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("failing", "slow", "echo", "unstartable", "bytes"):
        monkeypatch.setitem(backends.BUILTIN, name, f"chain_backends:{name.title()}")


class Timed:
    """A service whose calls run under the handler's alarm, as in a per-connection handler."""

    def __init__(self, service: FingerService) -> None:
        self.service = service

    def respond(self, line: bytes) -> Reply:
        return self.service.respond(line, alarm_runner)


@pytest.fixture
def service(make_config):
    def make(text: str) -> Timed:
        return Timed(service_from(load(str(make_config(text)))))
    return make


def test_first_backend_that_knows_the_user_answers(service) -> None:
    """Order matters: static knows moshez, so echo behind it is not asked for moshez."""
    chain = service(STATIC + ECHO)
    reply = chain.respond(b"moshez\r\n")
    assert (reply.data, reply.outcome, reply.backend) == (b"Happy and well\r\n", ANSWERED,
                                                          "static")
    reply = chain.respond(b"/W kirk\r\n")
    assert (reply.data, reply.backend) == (b"user=kirk verbose=True\r\n", "echo")


def test_a_failing_backend_is_logged_and_the_next_one_asked(service, capfd) -> None:
    """An exception in one backend does not reach the client; the chain goes on."""
    chain = service(FAILING + 'message = "db down"\n' + STATIC)
    reply = chain.respond(b"moshez\r\n")
    assert (reply.data, reply.backend) == (b"Happy and well\r\n", "static")
    assert "backend failing failed for 'moshez': RuntimeError: db down" in capfd.readouterr().err


def test_when_every_backend_fails_the_client_gets_a_generic_line(service, capfd) -> None:
    """All failed: `Finger service unavailable`, never the exception text."""
    reply = service(FAILING + 'message = "secret detail"\n' + FAILING).respond(b"moshez\r\n")
    assert reply.data == UNAVAILABLE.encode() + b"\r\n"
    assert reply.outcome == ERROR
    assert b"secret" not in reply.data
    assert capfd.readouterr().err.count("secret detail") == 1


def test_unknown_after_a_failure_is_still_no_such_user(service) -> None:
    """One failure among backends that do not know the user: an ordinary unknown user."""
    reply = service(FAILING + STATIC).respond(b"ghost\r\n")
    assert (reply.data, reply.outcome) == (b"No such user.\r\n", NO_SUCH_USER)


def test_a_slow_backend_times_out_and_the_next_one_answers(service, capfd) -> None:
    """backend_timeout bounds each backend; a hung one counts as failed."""
    chain = service("[server]\nbackend_timeout = 0.3\n"
                    '[[backend]]\ntype = "slow"\nseconds = 5\n' + STATIC)
    started = time.monotonic()
    reply = chain.respond(b"moshez\r\n")
    assert time.monotonic() - started < 2
    assert reply.data == b"Happy and well\r\n"
    assert "TimeoutError: took longer than 0.3 s" in capfd.readouterr().err


def test_an_answer_that_is_not_text_is_a_failure(service, capfd) -> None:
    """A backend returning bytes breaks the contract: logged, and the next backend asked."""
    reply = service('[[backend]]\ntype = "bytes"\n' + STATIC).respond(b"moshez\r\n")
    assert (reply.data, reply.backend) == (b"Happy and well\r\n", "static")
    assert "TypeError: returned bytes, not str or None" in capfd.readouterr().err


def test_a_backend_that_cannot_start_is_a_config_error(service) -> None:
    """A constructor that raises is reported like a bad config: file, backend, reason."""
    with pytest.raises(ConfigError, match=r"backend\[1\]\.type: backend 'unstartable' failed to "
                                          r"start: OSError: cannot open its database"):
        service('[[backend]]\ntype = "unstartable"\n')


def test_backend_options_are_checked_for_typos(service) -> None:
    """A key the backend did not read is an unknown key, named with its backend."""
    with pytest.raises(ConfigError, match=r"backend\[1\]\.mesage: unknown key"):
        service(FAILING + 'mesage = "typo"\n')


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_get_a_short_clean_answer(line: bytes) -> None:
    """No byte string makes the service raise; every reply is CRLF-terminated clean text."""
    chain = service_from(_ECHO_CONFIG)  # the autouse fixture has registered `echo`
    reply = chain.respond(line)
    assert reply.data.endswith(b"\r\n")
    assert all(32 <= b < 127 or b in b"\t\r\n" for b in reply.data)
    assert reply.outcome in ("answered", "no such user", "denied", "invalid")


def _config_from(text: str) -> Config:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fingerd.toml"
        path.write_text(text)
        return load(str(path))


_ECHO_CONFIG = _config_from("[server]\nlist_users = true\n" + ECHO + STATIC)


def test_forwarding_is_limited_to_three_hops(service) -> None:
    """Even with forwarding on, a query naming more than 3 hosts is refused: each hop is a
    connection, and user@127.0.0.1@127.0.0.1@... would make a server call itself."""
    chain = service("[server]\nforwarding = true\n" + STATIC)
    four = b"moshez" + b"@127.0.0.1" * 4 + b"\r\n"  # numeric: no name lookups
    reply = chain.respond(four)
    assert (reply.data, reply.outcome) == (FORWARDING_DENIED.encode() + b"\r\n", DENIED)
    reply = chain.respond(b"moshez" + b"@127.0.0.1" * 3 + b"\r\n")
    assert reply.outcome != DENIED  # tried (127.0.0.1:79 answers, or refuses: either way)
    assert reply.backend == "forward"


def test_an_alarm_that_fires_before_the_call_starts_is_a_timeout() -> None:
    """The handler's alarm may fire before the call has even begun (a limit of a microsecond
    here; a loaded machine in real life): that too is the TimeoutError the chain handles,
    never the internal alarm escaping past it."""
    for _ in range(100):
        with pytest.raises(TimeoutError):
            with_alarm(1e-6, lambda: time.sleep(1))


def test_a_backend_whose_exception_cannot_say_what_it_is_is_a_failure_like_any() -> None:
    """An exception whose str() raises (a plugin's) is logged by its type: the lookup goes on
    to the next backend and never raises out of the service (the long-running server would
    die of it)."""
    from fingerd.backends.static import StaticBackend
    from fingerd.config import Options, ServerConfig

    class Unspeakable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot say")

    class Broken(StaticBackend):
        blocking = False

        def lookup(self, query):  # type: ignore[no-untyped-def]
            raise Unspeakable

    static = StaticBackend(Options({"users": {"moshez": "Happy and well"}}, "t", "b"))
    service = FingerService(ServerConfig(Options({}, "t", "server")),
                            [("broken", Broken(Options({}, "t", "b"))), ("static", static)])
    lookup = service.lookup(b"moshez\r\n")
    assert lookup.run_until_blocking() is None
    assert lookup.reply_or_error().data == b"Happy and well\r\n"


def test_run_until_blocking_answers_here_until_a_backend_blocks(capfd) -> None:
    """What the long-running front ends ask: backends that do not block run at once, in order
    (a failure logged and skipped); the first that blocks comes back as a Call for the runner,
    and after its answer the walk goes on."""
    from chain_backends import Echo, Slow

    from fingerd.config import Options, ServerConfig

    class NonBlockingFailure(Echo):
        def lookup(self, query):  # type: ignore[no-untyped-def]
            raise RuntimeError("down")

    class Unknown(Echo):
        def lookup(self, query):  # type: ignore[no-untyped-def]
            return None

    blocking = Slow(Options({"seconds": 1}, "t", "b"))  # (never run here)
    chain = [("down", NonBlockingFailure(Options({}, "t", "b"))),
             ("unknown", Unknown(Options({}, "t", "b"))),
             ("slow", blocking),
             ("echo", Echo(Options({}, "t", "b")))]
    service = FingerService(ServerConfig(Options({}, "t", "server")), chain)
    lookup = service.lookup(b"moshez\r\n")
    call = lookup.run_until_blocking()
    assert call is not None and call.name == "slow" and call.blocking
    assert "backend down failed for 'moshez': RuntimeError: down" in capfd.readouterr().err
    lookup.answered(call, None)  # the blocking backend does not know the user
    assert lookup.run_until_blocking() is None
    reply = lookup.reply_or_error()
    assert (reply.data, reply.backend) == (b"user=moshez verbose=False\r\n", "echo")


def test_run_until_blocking_hands_back_a_forward_and_fails_a_wrong_answer(capfd) -> None:
    """A forwarded query is one blocking call for the runner; a backend that answers bytes
    has failed (logged), and the next one answers, as with next_call() and a runner."""
    from chain_backends import Echo

    from fingerd.config import Options, ServerConfig

    class Wrong(Echo):
        def lookup(self, query):  # type: ignore[no-untyped-def]
            return b"not text"

    chain = [("wrong", Wrong(Options({}, "t", "b"))), ("echo", Echo(Options({}, "t", "b")))]
    service = FingerService(ServerConfig(Options({"forwarding": True}, "t", "server")), chain)
    lookup = service.lookup(b"moshez@example.org\r\n")
    call = lookup.run_until_blocking()
    assert call is not None and (call.name, call.blocking) == ("forward", True)
    lookup = service.lookup(b"moshez\r\n")
    assert lookup.run_until_blocking() is None
    assert lookup.reply_or_error().backend == "echo"
    assert "backend wrong failed for 'moshez': TypeError: returned bytes" in capfd.readouterr().err
