"""``type = "static"``: answers written into the config itself.

::

    [[backend]]
    type = "static"
    [backend.users]
    moshez = "Happy and well"
    office = \"\"\"Room 101
    Phone x4242\"\"\"

The tutorial's in-memory user database, with its "pseudo users" (keywords such as ``office``).
An empty string is a user who exists with nothing to say.
"""

from fingerd.backend import Backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query


class StaticBackend(Backend):
    blocking = False  # a dictionary look-up

    def __init__(self, options: "Options") -> None:
        self.users = options.strings("users", {})
        # Optional answer to an empty query (`finger @host`) when [server] list_users is on.
        self.listing = options.string("list", "")

    def lookup(self, query: "Query") -> str | None:
        return self.users.get(query.user)

    def list_users(self, query: "Query") -> str | None:
        return self.listing or None
