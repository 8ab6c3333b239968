"""The configuration: /etc/fingerd/fingerd.toml, checked once at load into typed objects.

Every key is read through :class:`Options`, which knows the type it expects and fails on a key
nobody read, so a typo is an error that names the file, the line and the key, never a setting
silently ignored. The defaults reveal nothing: no user list, no forwarding, no backends.

Parsing TOML costs more than the rest of a connection (tomllib and its regular expressions), so
when systemd gives the service a cache directory the parsed table is kept there in marshal form,
keyed by the file's identity and modification time.
"""

from __future__ import annotations

import os

DEFAULT_PATH = "/etc/fingerd/fingerd.toml"
_MAX_CONFIG_BYTES = 1024 * 1024

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

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

    def __init__(self, table: Mapping[str, object], path: str, prefix: str) -> None:
        self._table = table
        self._unread = set(table)
        self.path = path
        self.prefix = prefix  # how the table is named in error messages, e.g. "backend[1]"

    def error(self, key: str, reason: str) -> ConfigError:
        """A :class:`ConfigError` pointing at ``key`` of this table."""
        full = f"{self.prefix}.{key}" if self.prefix else key
        return ConfigError(self.path, reason, full, _find_line(self.path, full))

    def _get(self, key: str, kinds: tuple[type, ...], default: object) -> object:
        self._unread.discard(key)
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

    def finish(self) -> None:
        """Fail on the first key that nobody asked for: most likely a typo."""
        for key in sorted(self._unread):
            raise self.error(key, "unknown key")


def _find_line(path: str, full_key: str) -> int:
    """The line that sets ``full_key`` (``server.read_timeout``, ``backend[2].users.moshez``),
    or 0 where that cannot be told: no line is better than a wrong one. Only ever used for
    error messages, so it may read the file again."""
    table, backends = "", 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if line.startswith("["):
                    name = line.split("]")[0].strip("[ ")
                    if line.startswith("[[") and name == "backend":
                        backends += 1
                        table = f"backend[{backends}]"
                    elif name.startswith("backend.") and backends:
                        table = f"backend[{backends}]{name[len('backend'):]}"
                    else:
                        table = name
                elif "=" in line and not line.startswith("#"):
                    key = line.split("=", 1)[0].strip().strip("\"'")
                    if (f"{table}.{key}" if table else key) == full_key:
                        return number
    except OSError:
        pass
    return 0


class ServerConfig:
    """``[server]``: how the finger service behaves, whatever the backends are."""

    def __init__(self, options: Options) -> None:
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
        # `fingerd serve` only: one process serves everybody, so no source may take it all.
        self.max_connections = options.integer("max_connections", 256, minimum=1)
        self.max_connections_per_source = options.integer("max_connections_per_source", 16,
                                                          minimum=1)
        # `fingerd serve` only: answers not yet taken by slow readers, in all.
        self.max_unsent_bytes = options.integer("max_unsent_bytes", 64 * 1024 * 1024,
                                                minimum=1024 * 1024)
        charset = options.string("output_charset", "ascii")
        if charset not in ("ascii", "utf-8"):
            raise options.error("output_charset", f'must be "ascii" or "utf-8", got {charset!r}')
        self.ascii_only = charset == "ascii"
        options.finish()


class BackendSpec:
    """One ``[[backend]]`` table: its type and the options the backend will read itself."""

    def __init__(self, options: Options) -> None:
        self.type = options.string("type")
        self.name = options.string("name", self.type)  # how logs refer to it
        self.options = options


# The tables of the front ends other than finger itself (the web view, the IRC bot, the status
# service). Each front end reads its own table with its own typed class, which checks it; here
# they are only set aside, so that the per-connection handler never pays for reading them.
FRONTEND_TABLES = ("web", "irc", "status")


class Config:
    """The whole file: ``[server]``, the ordered ``[[backend]]`` chain, and the front ends'
    tables (``frontends["web"]`` and so on: an :class:`Options`, empty when not in the file)."""

    def __init__(self, path: str, table: Mapping[str, object]) -> None:
        self.path = path
        top = Options(table, path, "")
        self.frontends: dict[str, Options] = {}
        for name in FRONTEND_TABLES:
            value = top._get(name, (dict,), {})
            assert isinstance(value, dict)
            self.frontends[name] = Options(value, path, name)
        server = top._get("server", (dict,), {})
        assert isinstance(server, dict)
        self.server = ServerConfig(Options(server, path, "server"))
        backends = top._get("backend", (list,), [])
        assert isinstance(backends, list)
        self.backends: list[BackendSpec] = []
        for number, entry in enumerate(backends, 1):
            if not isinstance(entry, dict):
                raise top.error("backend", "must be an array of tables ([[backend]])")
            options = Options(entry, path, f"backend[{number}]")
            self.backends.append(BackendSpec(options))
        top.finish()


def default_path() -> str:
    """``$FINGERD_CONFIG`` if set, else /etc/fingerd/fingerd.toml."""
    return os.environ.get("FINGERD_CONFIG") or DEFAULT_PATH


def load(path: str | None = None, cache_dir: str | None = None) -> Config:
    """Read and check the config.

    A missing /etc/fingerd/fingerd.toml gives the built-in defaults, which answer nobody; a
    missing file that was named explicitly (``--config``, ``$FINGERD_CONFIG``) is an error.
    """
    explicit = path or os.environ.get("FINGERD_CONFIG")
    path = explicit or DEFAULT_PATH
    cache = os.path.join(cache_dir, "config.marshal") if cache_dir else None
    table: dict[str, object] | None = None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            stamp = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if cache:
                table = _cache_get(cache, stamp)
            if table is None:
                data = f.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(path, "no such file") from None
        return Config(path, {})
    except OSError as e:
        raise ConfigError(path, e.strerror or str(e)) from None
    if table is None:
        if len(data) > _MAX_CONFIG_BYTES:
            raise ConfigError(path, "larger than 1 MiB")
        table = _parse_toml(path, data)
        if cache:
            _cache_put(cache, stamp, table)
    return Config(path, table)


def _parse_toml(path: str, data: bytes) -> dict[str, object]:
    import tomllib

    try:
        text = data.decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line L, column C)"; lift the line into the usual place.
        message, _, where = str(e).rpartition(" (at line ")
        line = int(where.split(",")[0]) if message and where[:1].isdigit() else 0
        raise ConfigError(path, f"TOML syntax: {message or e}", line=line) from None
    except (ValueError, RecursionError) as e:
        # tomllib's own limits: an integer of more than 4300 digits (ValueError), arrays or
        # tables nested a thousand deep (RecursionError). A broken file all the same.
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ConfigError(path, f"TOML cannot be read: {what}") from None


def _cache_get(cache: str, stamp: tuple[object, ...]) -> dict[str, object] | None:
    import marshal

    try:
        with open(cache, "rb") as f:
            # Safe to load: the cache directory is the service's own (systemd CacheDirectory=).
            cached_stamp, table = marshal.load(f)  # noqa: S302
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return table if cached_stamp == stamp and isinstance(table, dict) else None


def _cache_put(cache: str, stamp: tuple[object, ...], table: dict[str, object]) -> None:
    import marshal

    tmp = f"{cache}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            marshal.dump((stamp, table), f)  # type: ignore[arg-type]
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old or the new file
    except (OSError, ValueError):
        # A cache we cannot write only costs time; tomllib's datetime values are not marshalable.
        try:  # noqa: SIM105 (contextlib costs 3 ms to import; this runs per connection)
            os.unlink(tmp)
        except OSError:
            pass
