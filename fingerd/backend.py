"""The backend interface: how fingerd asks "what do you know about this user?".

A backend is a class with a constructor and one method::

    from fingerd.backend import Backend

    class Hello(Backend):
        blocking = False                        # a dictionary look-up: never waits

        def __init__(self, options):            # options: this backend's [[backend]] table
            self.greeting = options.string("greeting", "Hello")

        def lookup(self, query):                # query: fingerd.protocol.Query
            return f"{self.greeting}, {query.user}!" if query.user == "world" else None

and is configured as ``[[backend]] type = "hello"``. The whole contract:

**Answers.** The chain (fingerd/service.py) asks the configured backends in order:

- ``lookup`` returns the answer text: the chain stops and sends it (filtered, see
  fingerd/protocol.py: the backend need not clean it, it cannot smuggle escapes through);
- ``lookup`` returns ``None``: this backend does not know the user; the next one is asked;
- ``lookup`` raises (anything, ``SystemExit`` included) or takes longer than ``[server]
  backend_timeout``: the failure and its reason go to the journal, the next backend is asked.

If nobody knows the user the client gets the "no such user" line; if every backend failed, a
generic "service unavailable" line. ``list_users`` is the same contract for an empty query
(``finger @host``), asked only when ``[server] list_users = true``. ``query.user`` is whatever
a client sent (paths, options, shell words): never use it as one. ``query.remote`` is the
asker's address where the front end can vouch for it, ``""`` otherwise.

**Options.** ``__init__`` reads every key it supports from ``options`` (typed: ``string``,
``boolean``, ``integer``, ``number``, ``strings``, ``string_list``, ``secret``), also where the
default applies: a key nobody reads is reported as unknown, so a typo is an error. A bad value
is ``raise options.error(key, reason)``; the message names file, line and key.

**Threads and interruption.** One backend object answers for the life of a process. The
long-running front ends call ``lookup`` from several worker threads at once, unless the class
declares ``blocking = False`` (then only on the event loop, which must never wait: no files,
no network). A lookup that takes too long is abandoned: in the per-connection handler it is
interrupted by an exception raised inside it at any point (a signal); in the long-running
front ends its thread runs on and its result is dropped. So a backend keeps no lock across
I/O and leaves any cache whole at every step (replace it, do not mutate it).

**Cost.** The per-connection handler imports the backend for every connection: import what a
lookup needs inside ``lookup``, and only that.

**Checks.** ``fingerd check`` calls ``probe()`` once, as the service's user: say what would
stop this backend from answering (a file that is not there, a server that refuses).

Built-in backends live in fingerd/backends/, one module per ``type``. Third-party packages
declare an entry point in the group ``fingerd.backends`` naming their class (see README), and
test themselves with the contract suite in fingerd/testing.py.
"""

import abc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query

PROBE_USER = "fingerd-check-probe"


class Backend(abc.ABC):
    """Base class of every lookup backend (see the module docstring for the contract)."""

    # False only if lookup() never waits (no files, programs or network): the long-running
    # front ends then call it on their event loop instead of a worker thread.
    blocking: bool = True

    # True if lookup() opens network connections (to other hosts, or to a service on this
    # host's loopback). The packaged units have no network unless the admin allows it;
    # `fingerd check` and the handler say so when a configured backend needs it
    # (fingerd/sandbox.py).
    needs_network: bool = False

    @abc.abstractmethod
    def __init__(self, options: "Options") -> None:
        """Read this backend's settings from ``options`` (its ``[[backend]]`` table).

        Raise ``options.error(key, reason)`` for a bad value. Keys left unread are reported as
        unknown by the caller, so read every key you support even where the default is used.
        """

    @abc.abstractmethod
    def lookup(self, query: "Query") -> str | None:
        """The answer for ``query.user`` (``query.verbose`` asks for the long form), or None."""

    def list_users(self, query: "Query") -> str | None:
        """The answer to an empty query: who is on line. None: this backend keeps no list."""
        return None

    def probe(self) -> list[str]:
        """What would stop this backend from answering, one short sentence each; [] if
        nothing. The default asks once for a user nobody has: an exception is the problem."""
        from fingerd.protocol import Query

        try:
            self.lookup(Query(PROBE_USER))
        except Exception as e:
            return [f"{type(e).__name__}: {e}" if str(e) else type(e).__name__]
        return []
