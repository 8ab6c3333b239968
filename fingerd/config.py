"""The configuration: /etc/fingerd/fingerd.toml and its drop-ins, checked once at load into
typed objects.

Every key is read through :class:`Options`, which knows the type it expects and fails on a key
nobody read, so a typo is an error that names the file, the line and the key (and the key that
was probably meant), never a setting silently ignored. The defaults reveal nothing: no user
list, no forwarding, no backends. How the files are found, merged and cached:
fingerd/configfiles.py.

Secrets do not belong in a file every local user can read: a value that takes them
(:meth:`Options.secret`) may say ``{credential:NAME}``, replaced by the systemd credential NAME
(``LoadCredential=`` in the unit; fingerd/credentials.py).
"""

import os

DEFAULT_PATH = "/etc/fingerd/fingerd.toml"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from fingerd.configfiles import Sources

_MISSING: object = object()
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "a table", list: "an array"}


class ConfigError(Exception):
    """A config file that cannot be used. ``str()`` names the file, line or key, and reason."""

    def __init__(self, path: str, reason: str, key: str = "", line: int = 0) -> None:
        self.path, self.reason, self.key, self.line = path, reason, key, line
        where = path + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class Options:
    """One table of the config, read key by key with its expected type.

    A backend receives its ``[[backend]]`` table as an ``Options``; it reads the keys it knows,
    and whatever is left unread when it is done is reported as an unknown key.
    """

    def __init__(self, table: "Mapping[str, object]", path: str, prefix: str,
                 sources: "Sources | None" = None) -> None:
        self._table = table
        self._unread = set(table)
        self._asked: set[str] = set()
        self.prefix = prefix  # how the table is named in error messages, e.g. "backend[1]"
        self.sources = sources
        # The file this table comes from (a drop-in's, for its [[backend]] tables): a relative
        # path in it is relative to that file's directory.
        self.path = sources.file_of(prefix) if sources is not None and prefix else path

    def error(self, key: str, reason: str) -> "ConfigError":
        """A :class:`ConfigError` pointing at ``key`` of this table."""
        full = f"{self.prefix}.{key}" if self.prefix else key
        if self.sources is not None:
            path, line = self.sources.locate(full)
        else:
            from fingerd.configfiles import find_line

            path, line = self.path, find_line(self.path, full)
        return ConfigError(path, reason, full, line)

    def items(self) -> dict[str, object]:
        """The table as read (for ``fingerd check --dump``)."""
        return dict(self._table)

    def empty(self) -> bool:
        """Whether the table has no key at all (a front end's table absent from the file)."""
        return not self._table

    def table(self, key: str) -> "Options":
        """A sub-table, as Options of its own (``[web.links]``...); empty when absent."""
        value = self._get(key, (dict,), {})
        assert isinstance(value, dict)
        full = f"{self.prefix}.{key}" if self.prefix else key
        return Options(value, self.path, full, self.sources)

    def _get(self, key: str, kinds: tuple[type, ...], default: object) -> object:
        self._unread.discard(key)
        self._asked.add(key)
        if key not in self._table:
            if default is _MISSING:
                raise self.error(key, "missing")
            return default
        value = self._table[key]
        # bool is an int in Python; a TOML `true` must not pass for a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(key, f"expected {_TYPE_NAMES[kinds[0]]}, got {_type_name(value)}"
                             f" ({value!r})")
        return value

    def string(self, key: str, default: object = _MISSING) -> str:
        value = self._get(key, (str,), default)
        assert isinstance(value, str)
        return value

    def boolean(self, key: str, default: object = _MISSING) -> bool:
        value = self._get(key, (bool,), default)
        assert isinstance(value, bool)
        return value

    def integer(self, key: str, default: object = _MISSING, *, minimum: int = 0,
                maximum: int | None = None) -> int:
        value = self._get(key, (int,), default)
        assert isinstance(value, int)
        if value < minimum or (maximum is not None and value > maximum):
            top = f" and {maximum}" if maximum is not None else ""
            raise self.error(key, f"must be between {minimum}{top}, got {value}"
                             if top else f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: object = _MISSING, *, maximum: float = 3600.0) -> float:
        """A time in seconds, or the like: more than 0, at most ``maximum``, finite."""
        value = self._get(key, (float, int), default)
        assert isinstance(value, (int, float))
        if not 0 < value <= maximum:  # false for nan too; TOML has nan and inf
            raise self.error(key, f"must be more than 0 and at most {maximum:g}, got {value}")
        return float(value)

    def strings(self, key: str, default: object = _MISSING) -> dict[str, str]:
        """A table whose values are all strings, such as ``[backend.users]``."""
        value = self._get(key, (dict,), default)
        assert isinstance(value, dict)
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.error(f"{key}.{name}",
                                 f"expected a string, got {_type_name(item)} ({item!r})")
        return value

    def string_list(self, key: str, default: object = _MISSING) -> list[str]:
        value = self._get(key, (list,), default)
        assert isinstance(value, list)
        for item in value:
            if not isinstance(item, str):
                raise self.error(key, f"expected strings only, got {_type_name(item)}")
        return value

    def secret(self, key: str, value: str) -> str:
        """``value`` (of ``key``) with ``{credential:NAME}`` replaced by the systemd credential
        NAME: a token need not be written into a file that others can read."""
        if "{credential:" not in value:
            return value
        from fingerd.credentials import CredentialError, substitute

        try:
            return substitute(value)
        except CredentialError as e:
            raise self.error(key, str(e)) from None

    def finish(self) -> None:
        """Fail on the first key that nobody asked for: most likely a typo."""
        for key in sorted(self._unread):
            import difflib

            close = difflib.get_close_matches(key, sorted(self._asked), n=1, cutoff=0.6)
            raise self.error(key, f"unknown key; did you mean {close[0]!r}?" if close
                             else "unknown key")


class ServerConfig:
    """``[server]``: how the finger service behaves, whatever the backends are."""

    def __init__(self, options: "Options") -> None:
        self.list_users = options.boolean("list_users", False)
        self.forwarding = options.boolean("forwarding", False)
        self.read_timeout = options.number("read_timeout", 10.0)
        self.backend_timeout = options.number("backend_timeout", 5.0)
        self.no_such_user = options.string("no_such_user", "No such user.")
        self.no_information = options.string("no_information", "No information.")
        # Anti-enumeration: answer an unknown user exactly as a known user with nothing to say.
        self.conceal_unknown = options.boolean("conceal_unknown", False)
        self.max_answer_bytes = options.integer("max_answer_bytes", 65536, minimum=256,
                                                maximum=16 * 1024 * 1024)
        # `fingerd serve` and `fingerd web` only: one process serves everybody, so no source
        # may take it all (fingerd/admission.py).
        self.max_connections = options.integer("max_connections", 256, minimum=1)
        self.max_connections_per_source = options.integer("max_connections_per_source", 16,
                                                          minimum=1)
        # Likewise: the memory that answers not yet taken by slow readers may hold, in all.
        self.max_unsent_bytes = options.integer("max_unsent_bytes", 64 * 1024 * 1024,
                                                minimum=1024 * 1024)
        charset = options.string("output_charset", "ascii")
        if charset not in ("ascii", "utf-8"):
            raise options.error("output_charset", f'must be "ascii" or "utf-8", got {charset!r}')
        self.ascii_only = charset == "ascii"
        options.finish()


class BackendSpec:
    """One ``[[backend]]`` table: its type and the options the backend will read itself."""

    def __init__(self, options: "Options") -> None:
        self.type = options.string("type")
        self.name = options.string("name", self.type)  # how logs refer to it
        self.options = options


# The tables of the front ends other than finger itself (the web view, the IRC bot). Each front
# end reads its own table with its own typed class, which checks it (`fingerd check` too); here
# they are only set aside, so that the per-connection handler never pays for reading them.
FRONTEND_TABLES = ("web", "irc")


class Config:
    """The whole file: ``[server]``, the ordered ``[[backend]]`` chain, and the front ends'
    tables (``frontends["web"]`` and so on: an :class:`Options`, empty when not in the file)."""

    def __init__(self, path: str, table: "Mapping[str, object]",
                 sources: "Sources | None" = None) -> None:
        self.path = path
        self.table = table  # the merged table, as read (`fingerd check --dump`)
        self.sources = sources
        self.files = sources.files if sources is not None else [path]  # every file read
        top = Options(table, path, "", sources)
        self.frontends: dict[str, Options] = {name: top.table(name) for name in FRONTEND_TABLES}
        self.server = ServerConfig(top.table("server"))
        backends = top._get("backend", (list,), [])
        assert isinstance(backends, list)
        self.backends: list[BackendSpec] = []
        for number, entry in enumerate(backends, 1):
            if not isinstance(entry, dict):
                raise top.error("backend", "must be an array of tables ([[backend]])")
            options = Options(entry, path, f"backend[{number}]", sources)
            self.backends.append(BackendSpec(options))
        top.finish()


def load(path: str | None = None, cache_dir: str | None = None) -> "Config":
    """Read and check the config: the main file and its drop-ins (fingerd/configfiles.py).

    A missing /etc/fingerd/fingerd.toml gives the built-in defaults, which answer nobody; a
    missing file that was named explicitly (``--config``, ``$FINGERD_CONFIG``) is an error.
    """
    from fingerd.configfiles import read

    explicit = path or os.environ.get("FINGERD_CONFIG")
    path = explicit or DEFAULT_PATH
    table, sources = read(path, bool(explicit), cache_dir,
                          lambda file, reason, line: ConfigError(file, reason, line=line))
    return Config(path, table, sources)
