"""The contract every backend keeps (fingerd/backend.py), as one suite that each backend's
tests subclass, supplying only the ``world`` fixture: a configured backend, a user it knows
and what its answer contains. As keyring's backend tests do, every backend is held to the same
promises, up to answering over a real socket through the handler and ``fingerd serve``.

    class TestFileContract(BackendContract):
        @pytest.fixture
        def world(self, tmp_path):
            ...
            yield World(table={"type": "file", "path": str(status)}, known="alice",
                        expect="Happy and well")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backend_fixtures import fingerd_serve, make_backend, public_dir, run_handler, write_config

from fingerd.config import Config, ConfigError
from fingerd.protocol import Query, parse_query
from fingerd.service import ANSWERED, NO_SUCH_USER, FingerService

# User names a client can send (parse_query accepts them all) that no backend may take for a
# path, a command line, an option or a pattern.
HOSTILE_NAMES = ("..", ".", "../../etc/passwd", "a/b", "a/../b", "-rf", "--help", "$(id)",
                 "`id`", "a;b", "a|b", "%2e%2e", "%2F", "~root", "*", "?", "a\\b", ".plan",
                 "\u210c", "x" * 300)


@dataclass
class World:
    """One configured backend and what it knows."""

    table: dict[str, object]  # the [[backend]] table, type included
    known: str  # a user this backend knows
    expect: str  # printable ASCII text its answer for ``known`` contains
    expect_verbose: str = ""  # ... and its answer to ``/W known`` (default: ``expect``)
    unknown: str = "fingerd-nobody-knows-this-one"
    # (key, value) pairs that are each a config error naming the key
    bad_options: list[tuple[str, object]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # for the fingerd processes


class BackendContract:
    """Subclass as ``TestXxxContract`` and define the ``world`` fixture."""

    @pytest.fixture
    def world(self) -> World:
        raise NotImplementedError("a backend's contract tests define the world fixture")

    @pytest.fixture
    def backend(self, world: World):  # type: ignore[no-untyped-def]
        return make_backend(world.table)

    # -- lookup ---------------------------------------------------------------------------

    def test_known_user_is_answered(self, world: World, backend: object) -> None:
        """lookup() returns the answer text for a user the backend knows."""
        answer = backend.lookup(Query(world.known))  # type: ignore[attr-defined]
        assert isinstance(answer, str)
        assert world.expect in answer

    def test_verbose_query_is_answered(self, world: World, backend: object) -> None:
        """lookup() answers ``/W user`` (verbose) for a known user too."""
        answer = backend.lookup(Query(world.known, verbose=True))  # type: ignore[attr-defined]
        assert isinstance(answer, str)
        assert (world.expect_verbose or world.expect) in answer

    def test_unknown_user_is_none(self, world: World, backend: object) -> None:
        """lookup() returns None, not an error and not an empty answer, for an unknown user:
        the chain must go on to the next backend."""
        assert backend.lookup(Query(world.unknown)) is None  # type: ignore[attr-defined]

    @pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n[:20]))
    def test_hostile_names_are_unknown_not_failures(self, world: World, backend: object,
                                                    name: str) -> None:
        """A user name that looks like a path, an option or a shell word is just an unknown
        user: None, no exception, and it never reaches anything it could steer."""
        assert parse_query(name.encode() + b"\r\n") == Query(name)  # a name clients can send
        assert backend.lookup(Query(name)) is None  # type: ignore[attr-defined]
        assert backend.lookup(Query(name, verbose=True)) is None  # type: ignore[attr-defined]

    def test_answer_is_stable(self, world: World, backend: object) -> None:
        """Asking twice gives the same answer (a cache must not change what is said)."""
        first = backend.lookup(Query(world.known))  # type: ignore[attr-defined]
        assert backend.lookup(Query(world.known)) == first  # type: ignore[attr-defined]

    def test_concurrent_lookups_agree(self, world: World, backend: object) -> None:
        """One backend object answers many threads at once (fingerd serve's worker pool)
        with the same answers as one thread."""
        expected = backend.lookup(Query(world.known))  # type: ignore[attr-defined]
        results: list[list[object]] = [[] for _ in range(8)]

        def ask(mine: list[object]) -> None:
            for _ in range(5):
                mine.append(backend.lookup(Query(world.known)))  # type: ignore[attr-defined]
                mine.append(backend.lookup(Query(world.unknown)))  # type: ignore[attr-defined]

        threads = [threading.Thread(target=ask, args=(mine,)) for mine in results]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == [[expected, None] * 5] * 8

    def test_list_users_is_text_or_none(self, world: World, backend: object) -> None:
        """list_users() (an empty query) answers with text or None, and never raises."""
        for verbose in (False, True):
            answer = backend.list_users(Query("", verbose))  # type: ignore[attr-defined]
            assert answer is None or isinstance(answer, str)

    def test_declares_whether_it_blocks(self, backend: object) -> None:
        """``blocking`` is a bool: fingerd serve decides by it whether to use a thread."""
        assert isinstance(type(backend).blocking, bool)  # type: ignore[attr-defined]

    # -- configuration --------------------------------------------------------------------

    def test_unknown_option_is_a_config_error(self, world: World) -> None:
        """A misspelt option is reported with its name, not silently ignored."""
        with pytest.raises(ConfigError) as caught:
            make_backend({**world.table, "no_such_option": 1})
        assert "backend[1].no_such_option: unknown key" in str(caught.value)

    def test_bad_option_values_are_config_errors(self, world: World) -> None:
        """Each bad value is a ConfigError that names the option, found at load time."""
        for key, value in world.bad_options:
            with pytest.raises(ConfigError) as caught:
                make_backend({**world.table, key: value})
            assert f"backend[1].{key}" in str(caught.value), (key, value)

    # -- through the service, the handler and fingerd serve --------------------------------

    def test_chain_answers(self, world: World) -> None:
        """Through the chain: a known user is answered by this backend, an unknown one gets
        the "no such user" line."""
        service = FingerService(Config("test.toml", {"backend": [dict(world.table)]}))
        reply = service.respond(world.known.encode() + b"\r\n")
        assert (reply.outcome, reply.backend) == (ANSWERED, world.table["type"])
        assert world.expect.encode() in reply.data
        reply = service.respond(world.unknown.encode() + b"\r\n")
        assert reply.outcome == NO_SUCH_USER
        assert reply.data == b"No such user.\r\n"

    def test_handler_answers_on_a_socket(self, world: World) -> None:
        """End to end: the per-connection handler, with the connection as stdin/stdout (a real
        socketpair), answers a known user and refuses an unknown one."""
        with public_dir() as directory:
            config = write_config(Path(directory) / "fingerd.toml", [world.table])
            reply = run_handler(config, world.known.encode() + b"\r\n", env=world.env)
            assert reply.returncode == 0, reply.log
            assert world.expect.encode() in reply.data, reply.log
            assert reply.data.endswith(b"\r\n")
            reply = run_handler(config, b"/W " + world.unknown.encode() + b"\r\n",
                                env=world.env)
            assert reply.data == b"No such user.\r\n", reply.log

    def test_serve_answers(self, world: World) -> None:
        """End to end: ``fingerd serve`` (as nobody when run as root) answers over TCP."""
        with public_dir() as directory:
            config = write_config(Path(directory) / "fingerd.toml", [world.table])
            with fingerd_serve(config, env=world.env) as served:
                data = served.query(world.known.encode() + b"\r\n")
                assert world.expect.encode() in data, served.log
                data = served.query(b"/W " + world.known.encode() + b"\r\n")
                assert (world.expect_verbose or world.expect).encode() in data, served.log
                assert served.query(world.unknown.encode() + b"\r\n") == b"No such user.\r\n"
