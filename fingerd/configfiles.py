"""Reading the configuration files: the main file, its drop-ins, and the parse cache.

``/etc/fingerd/fingerd.toml`` is read first, then every ``*.toml`` in ``/etc/fingerd/fingerd.d/``
in lexical order (for ``--config DIR/NAME.toml``: ``DIR/NAME.d/``). They merge into one table:

- tables merge key by key, at every depth (a drop-in's ``[server]`` changes the keys it sets);
- any other value set again replaces the earlier one (a later file wins; an array too);
- ``[[backend]]`` tables are appended: the main file's first, then each drop-in's, in order.

Every key remembers the file that set it, so that an error names that file and its line.

Parsing TOML costs more than the rest of a connection (tomllib and its regular expressions), so
when systemd gives the service a cache directory the parsed files are kept there in marshal
form, keyed by each file's identity and modification time and by the drop-in directory's.
"""

import os

MAX_FILE_BYTES = 1024 * 1024
MAX_DROPINS = 256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Table = dict[str, object]


class Sources:
    """Which file set each key of the merged table: for error messages only."""

    def __init__(self, main: str) -> None:
        self.main = main
        self.files = [main]  # every file read, in order
        self.keys: dict[str, str] = {}  # dotted key -> file, where a drop-in set it
        self.backends: list[tuple[str, int]] = []  # global backend N-1 -> (file, its number there)

    def file_of(self, full_key: str) -> str:
        """The file that set ``full_key`` (``server.read_timeout``, ``backend[3].url``)."""
        if full_key.startswith("backend[") and "]" in full_key:
            number = full_key[8:full_key.index("]")]
            if number.isdigit() and 0 < int(number) <= len(self.backends):
                return self.backends[int(number) - 1][0]
        parts = full_key.split(".")
        for end in range(len(parts), 0, -1):
            path = self.keys.get(".".join(parts[:end]))
            if path is not None:
                return path
        return self.main

    def locate(self, full_key: str) -> tuple[str, int]:
        """(file, line) of ``full_key``; line 0 where it cannot be told."""
        path, local = self.file_of(full_key), full_key
        if full_key.startswith("backend[") and path != self.main:
            number = int(full_key[8:full_key.index("]")])
            local = f"backend[{self.backends[number - 1][1]}]{full_key[full_key.index(']') + 1:]}"
        return path, find_line(path, local)


def dropin_dir(path: str) -> str:
    """``/etc/fingerd/fingerd.toml`` -> ``/etc/fingerd/fingerd.d``."""
    base = path[:-5] if path.endswith(".toml") else path
    return base + ".d"


def read(path: str, explicit: bool, cache_dir: str | None,
         error: "Callable[[str, str, int], Exception]") -> "tuple[Table, Sources]":
    """The merged table of ``path`` and its drop-ins, and where each key came from.

    A missing main file is an empty table (the built-in defaults) unless it was named
    explicitly. ``error(path, reason, line)`` makes the exception to raise.
    """
    sources = Sources(path)
    stamps: list[tuple[object, ...]] = []
    main = _stat(path, error)
    if main is None:
        if explicit:
            raise error(path, "no such file", 0)
    else:
        stamps.append(main)
    directory = dropin_dir(path)
    dropins = _dropins(directory, error)
    if dropins is not None:
        names, dir_stamp = dropins
        stamps.append(dir_stamp)
        for name in names:
            file = os.path.join(directory, name)
            stamp = _stat(file, error)
            if stamp is not None:
                stamps.append(stamp)
                sources.files.append(file)
    if main is None:
        sources.files.remove(path)
    cache = os.path.join(cache_dir, "config.marshal") if cache_dir else None
    tables = _cache_get(cache, stamps) if cache else None
    if tables is None:
        tables = [_parse(file, error) for file in sources.files]
        if cache:
            _cache_put(cache, stamps, tables)
    if len(tables) == 1:
        table = tables[0]
        backends = table.get("backend")
        if isinstance(backends, list):
            sources.backends = [(sources.files[0], n) for n in range(1, len(backends) + 1)]
        return table, sources
    merged: Table = {}
    for file, table in zip(sources.files, tables, strict=True):
        _merge(merged, table, file, sources, "")
    return merged, sources


def _stat(path: str, error: "Callable[[str, str, int], Exception]") -> tuple[object, ...] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(path, e.strerror or str(e), 0) from None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _dropins(directory: str, error: "Callable[[str, str, int], Exception]"
             ) -> tuple[list[str], tuple[object, ...]] | None:
    """The drop-in file names in lexical order, and the directory's stamp (files added or
    removed change its times); None if there is no such directory."""
    try:
        st = os.stat(directory)
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise error(directory, e.strerror or str(e), 0) from None
    # Hidden files and editor backups (.x.toml.swp, x.toml~) do not end in ".toml".
    names = sorted(n for n in names if n.endswith(".toml") and not n.startswith("."))
    if len(names) > MAX_DROPINS:
        raise error(directory, f"more than {MAX_DROPINS} drop-ins", 0)
    return names, (directory, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _merge(into: "Table", table: "Table", file: str, sources: "Sources", prefix: str) -> None:
    for key, value in table.items():
        full = prefix + key
        if not prefix and key == "backend" and isinstance(value, list):
            earlier = into.get("backend")
            if not isinstance(earlier, list):
                earlier = into["backend"] = []
            for number, entry in enumerate(value, 1):
                earlier.append(entry)
                sources.backends.append((file, number))
            continue
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = dict(into[key])  # type: ignore[call-overload]  # a copy: never alter a file's own table
            _merge(into[key], value, file, sources, full + ".")  # type: ignore[arg-type]
            continue
        into[key] = value
        if file != sources.main:
            sources.keys[full] = file


def _parse(path: str, error: "Callable[[str, str, int], Exception]") -> "Table":
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise error(path, e.strerror or str(e), 0) from None
    if len(data) > MAX_FILE_BYTES:
        raise error(path, "larger than 1 MiB", 0)
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(path, f"not UTF-8 ({e.reason} at byte {e.start})", 0) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line L, column C)"; lift the line into the usual place.
        message, _, where = str(e).rpartition(" (at line ")
        line = int(where.split(",")[0]) if message and where[:1].isdigit() else 0
        raise error(path, f"TOML syntax: {message or e}", line) from None
    except (ValueError, RecursionError) as e:
        # tomllib's own limits: an integer of more than 4300 digits (ValueError), arrays or
        # tables nested a thousand deep (RecursionError). A broken file all the same.
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise error(path, f"TOML cannot be read: {what}", 0) from None


def find_line(path: str, full_key: str) -> int:
    """The line of ``path`` that sets ``full_key`` (``server.read_timeout``,
    ``backend[2].users.moshez``), or 0 where that cannot be told: no line is better than a
    wrong one. Only ever used for error messages, so it may read the file again."""
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


def _cache_get(cache: str, stamps: list[tuple[object, ...]]) -> "list[Table] | None":
    import marshal

    try:
        with open(cache, "rb") as f:
            # Safe to load: the cache directory is the service's own (systemd CacheDirectory=).
            cached_stamps, tables = marshal.load(f)  # noqa: S302
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if cached_stamps != stamps or not isinstance(tables, list):
        return None
    return tables


def _cache_put(cache: str, stamps: list[tuple[object, ...]], tables: "list[Table]") -> None:
    import marshal

    tmp = f"{cache}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            marshal.dump((stamps, tables), f)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old or the new file
    except (OSError, ValueError):
        # A cache we cannot write only costs time; tomllib's datetime values are not marshalable.
        try:  # noqa: SIM105 (contextlib costs 3 ms to import; this runs per connection)
            os.unlink(tmp)
        except OSError:
            pass
