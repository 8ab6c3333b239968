"""``type = "status"``: the status users set themselves with ``fingerd status``.

::

    [[backend]]
    type = "status"
    # socket = "/run/fingerd/status.sock"   # fingerd-status.socket
    # timeout = 3.0                          # seconds for the whole lookup

Asks the status service (fingerd/status_server.py, ``fingerd-status.socket``) for the user's
status with one ``GET user`` over its UNIX socket (the protocol: fingerd/status_protocol.py).
The service owns the statuses: fingerd's own units, with ``DynamicUser=``, cannot read another
unit's state directory. A user with a status that has not expired is answered with its text
(with ``/W``, followed by when it was set and when it expires); anybody else is None, so the
chain goes on (``local`` after this one still answers from ``~/.plan``). A service that is not
running (the socket is not enabled), does not answer in ``timeout`` or answers garbage fails
the lookup: the chain logs it and asks the next backend.

The handler imports this module on every connection when it is configured, so it uses the
interpreter's built-in ``_socket`` (as fingerd/backends/http.py does: ``socket`` would import
``enum`` and more) and the protocol module, which imports nothing. Measured cost in README.md
("Users set their own status").
"""

import time

from fingerd.backend import Backend
from fingerd.status_protocol import (
    DEFAULT_SOCKET,
    ERR,
    NONE,
    STATUS,
    ProtocolError,
    Reply,
    format_get,
    valid_user,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query


class StatusServiceError(OSError):
    """The status service could not be asked, or refused."""


def _when(timestamp: int) -> str:
    return time.strftime("%a %b %e %R %Y (%Z)", time.localtime(timestamp))


class StatusBackend(Backend):
    blocking = True  # a round trip to another process (which socket activation may start)

    def __init__(self, options: "Options") -> None:
        self.path = options.string("socket", DEFAULT_SOCKET)
        if not self.path.startswith("/"):
            raise options.error("socket", "must be an absolute path")
        self.timeout = options.number("timeout", 3.0, maximum=60.0)

    def lookup(self, query: "Query") -> str | None:
        if not valid_user(query.user):
            return None  # the protocol cannot carry it; no account has such a name
        reply = self._ask(format_get(query.user))
        if reply.kind == NONE:
            return None
        if reply.kind == ERR:
            raise StatusServiceError(f"status service refused: {reply.code} {reply.message}")
        if reply.kind != STATUS:
            raise StatusServiceError(f"status service: unexpected reply {reply.kind}")
        if not query.verbose:
            return reply.text
        until = f", expires {_when(reply.expires_at)}" if reply.expires_at else ""
        return f"{reply.text}\n\n(Status set {_when(reply.set_at)}{until}.)"

    def _ask(self, request: bytes) -> "Reply":
        from fingerd.status_client import exchange

        where = f"status service at {self.path}"
        try:
            return exchange(self.path, request, self.timeout)
        except TimeoutError:
            raise StatusServiceError(f"{where}: no answer within {self.timeout:g} s") from None
        except OSError as e:
            raise StatusServiceError(f"{where}: {e.strerror or type(e).__name__}") from None
        except ProtocolError as e:
            raise StatusServiceError(f"{where}: {e.message}") from None
