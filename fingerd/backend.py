"""The backend interface: how fingerd asks "what do you know about this user?".

A backend is a class with a constructor and one method::

    from fingerd.backend import Backend

    class Hello(Backend):
        def __init__(self, options):            # options: this backend's [[backend]] table
            self.greeting = options.string("greeting", "Hello")

        def lookup(self, query):                # query: fingerd.protocol.Query
            return f"{self.greeting}, {query.user}!" if query.user == "world" else None

and is configured as ``[[backend]] type = "hello"``. The chain (fingerd/service.py) asks the
configured backends in order, for each query:

- ``lookup`` returns the answer text: the chain stops and sends it (filtered, see
  fingerd/protocol.py: the backend need not clean it, it cannot smuggle escapes through);
- ``lookup`` returns ``None``: this backend does not know the user; the next one is asked;
- ``lookup`` raises (anything) or takes longer than ``[server] backend_timeout``: the failure
  and its reason go to the journal, and the next backend is asked.

If nobody knows the user the client gets the "no such user" line; if every backend failed, a
generic "service unavailable" line. ``list_users`` is the same contract for an empty query
(``finger @host``), asked only when ``[server] list_users = true``.

Built-in backends live in fingerd/backends/, one module per ``type``. Third-party packages
declare an entry point in the group ``fingerd.backends`` naming their class (see README).
"""

from __future__ import annotations

import abc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query


class Backend(abc.ABC):
    """Base class of every lookup backend (see the module docstring for the contract)."""

    # True if lookup() may wait on I/O (files, programs, the network). The long-running server
    # runs such lookups in worker threads so that one slow backend does not stall other clients.
    blocking: bool = True

    # True if lookup() opens network connections (to other hosts, or to a service on this
    # host's loopback). The packaged units have no network unless the admin allows it;
    # `fingerd check` and the handler say so when a configured backend needs it
    # (fingerd/sandbox.py).
    needs_network: bool = False

    @abc.abstractmethod
    def __init__(self, options: Options) -> None:
        """Read this backend's settings from ``options`` (its ``[[backend]]`` table).

        Raise ``options.error(key, reason)`` for a bad value. Keys left unread are reported as
        unknown by the caller, so read every key you support even where the default is used.
        """

    @abc.abstractmethod
    def lookup(self, query: Query) -> str | None:
        """The answer for ``query.user`` (``query.verbose`` asks for the long form), or None."""

    def list_users(self, query: Query) -> str | None:
        """The answer to an empty query: who is on line. None: this backend keeps no list."""
        return None
