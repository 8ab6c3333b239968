"""``type = "file"``: answers from a status file, or from a directory of them.

::

    [[backend]]
    type = "file"
    path = "/var/lib/fingerd/status"       # one file, lines "user: status text"

    [[backend]]
    type = "file"
    path = "/var/lib/fingerd/status.d/"    # one file per user, named after the user
    owner_must_match = true                # ... and counted only if that user owns it

A relative ``path`` is relative to the directory of the config file.

The Twisted tutorial's status file (``user: status`` lines), made fit for a real host:

- Edits take effect on the next query. The per-connection handler reads the file anew for
  every connection; the long-running ``fingerd serve`` keeps the parsed file and re-reads it
  when its identity or modification time changes (checked on every query, no timer).
- Problems are never fatal for everybody: a line without ``:`` or with a bad user name is
  skipped (one log line per read names them), a file over ``max_bytes`` is read up to the
  cap, and in a directory an unreadable or oversized file, a symlink that leads out of the
  directory, or a queried name containing ``/`` or ``..`` is skipped with a log line. Only a
  status file or directory that cannot be read at all fails the lookup (the chain logs it and
  asks the next backend).
- With ``owner_must_match`` a user's file counts only if the local account of that name owns
  it (and, for a symlink, the link too): users on a shared host publish their own status in a
  sticky directory, and nobody can speak for anybody else.

Only ``os``, ``stat`` and ``_thread`` (loaded at interpreter start) are imported up front;
``pwd`` and ``time`` only where they are needed.
"""

import _thread  # built in, loaded at interpreter start (``threading`` is not: 1-2 ms)
import os
import stat

from fingerd import log
from fingerd.backend import Backend
from fingerd.backends._read import read_capped

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query

DEFAULT_MAX_BYTES = 1024 * 1024
_MAX_MAX_BYTES = 64 * 1024 * 1024
_MAX_NAME = 255  # a file name, see NAME_MAX

# A file modified this recently may be modified again within the same timestamp tick (file
# systems stamp with a coarse clock); its parsed copy is not trusted until it has aged. This is
# git's "racily clean" rule: it costs a re-read during the first seconds after an edit only.
_RACY_NS = 2_000_000_000

# How many problems one log line names, at most.
_LOGGED_PROBLEMS = 3


class FileBackendError(OSError):
    """The status file or directory itself cannot be used (missing, unreadable, not a file)."""


def _valid_key(name: str) -> bool:
    """A user name as written in a status file: printable, no blanks, no path separators."""
    return (0 < len(name) <= _MAX_NAME and name.isprintable() and not any(c.isspace()
            for c in name) and "/" not in name)


def _safe_file_name(name: str) -> bool:
    """A queried user name that may be used as a file name in the status directory."""
    return (_valid_key(name) and not name.startswith(".")  # ".", "..", dot files, editor junk
            and "\\" not in name)


def _stamp(st: "os.stat_result") -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _problems(where: str, problems: list[str]) -> None:
    shown = "; ".join(problems[:_LOGGED_PROBLEMS])
    more = f" (and {len(problems) - _LOGGED_PROBLEMS} more)" if len(problems) > \
        _LOGGED_PROBLEMS else ""
    log.warning(f"{where}: {len(problems)} problem(s), skipped: {shown}{more}")


def parse_status(text: str, where: str = "status file") -> dict[str, str]:
    """Parse ``user: status`` lines; ``#`` comments and blank lines are ignored.

    The status is the text after the first ``:``, without the blanks around it. Several lines
    for the same user make a multi-line answer, in file order. Bad lines are skipped and
    reported in one log line.
    """
    # Lines gathered per user and joined once: `users[name] += ...` would copy the answer so far
    # for every line, quadratic in a file that repeats one name.
    lines: dict[str, list[str]] = {}
    problems = []
    for number, line in enumerate(text.split("\n"), 1):
        content = line.strip()
        if not content or content.startswith("#"):
            continue
        name, colon, status = content.partition(":")
        name = name.strip()
        if not colon:
            problems.append(f"line {number}: no ':'")
        elif not _valid_key(name):
            problems.append(f"line {number}: bad user name {log.printable(name)!r}")
        elif name in lines:
            lines[name].append(status.strip())
        else:
            lines[name] = [status.strip()]
    if problems:
        _problems(where, problems)
    return {name: "\n".join(texts) for name, texts in lines.items()}


class FileBackend(Backend):
    """Status from one ``user: status`` file, or from one file per user in a directory."""

    blocking = True  # file I/O: local disks are fast, network file systems need not be

    def __init__(self, options: "Options") -> None:
        path = options.string("path")
        if not path:
            raise options.error("path", "must not be empty")
        if not path.startswith("/"):
            # Relative to the directory of the config file, not to wherever fingerd runs.
            trailing = "/" if path.endswith("/") else ""
            path = os.path.join(os.path.dirname(os.path.abspath(options.path)), path) + trailing
        self.max_bytes = options.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1,
                                         maximum=_MAX_MAX_BYTES)
        self.owner_must_match = options.boolean("owner_must_match", False)
        self.directory = path.endswith("/") or os.path.isdir(path)
        self.path = path.rstrip("/") or "/"
        if self.owner_must_match and not self.directory:
            raise options.error("owner_must_match", "applies to a directory only (a path "
                                "ending in '/'); a single status file has a single owner")
        # (stamp, users) of the last parse; replaced as a whole, so readers need no lock.
        self._parsed: tuple[tuple[int, ...], dict[str, str]] | None = None
        # One parse at a time: in the long-running front ends, lookups that all find the
        # file changed wait for one parse instead of each holding a copy of the file
        # (32 cold parses of an 8 MiB file at once: bench/hostile.py 3 --cold).
        self._parsing = _thread.allocate_lock()

    def lookup(self, query: "Query") -> str | None:
        if self.directory:
            return self._from_directory(query.user)
        return self._status_file().get(query.user)

    # -- one status file ------------------------------------------------------------------

    def _status_file(self) -> dict[str, str]:
        """The parsed status file: from the cache while the file is unchanged."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise FileBackendError(f"status file {self.path}: {e.strerror}") from None
        parsed = self._parsed
        if parsed is not None and parsed[0] == _stamp(st):
            return parsed[1]
        with self._parsing:
            parsed = self._parsed  # parsed by another thread while this one waited?
            if parsed is not None and parsed[0] == _stamp(st):
                return parsed[1]
            return self._parse()

    def _parse(self) -> dict[str, str]:
        """Read and parse the status file, and keep it unless it may still change."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise FileBackendError(f"status file {self.path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)  # the file we actually read, if it was replaced meanwhile
            if not stat.S_ISREG(st.st_mode):
                raise FileBackendError(f"status file {self.path}: not a regular file")
            data, more = read_capped(fd, self.max_bytes)
            after = os.fstat(fd)
        except FileBackendError:
            raise
        except OSError as e:
            raise FileBackendError(f"status file {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)
        if more:
            # Whatever lies past the cap is not read; neither is the line cut by it.
            data = data[:data.rfind(b"\n") + 1]
            log.warning(f"status file {self.path}: larger than max_bytes = {self.max_bytes}; "
                        f"only the lines in the first {len(data)} bytes are used")
        users = parse_status(data.decode("utf-8", "replace"), f"status file {self.path}")
        import time

        if _stamp(after) == _stamp(st) and time.time_ns() - st.st_mtime_ns > _RACY_NS:
            self._parsed = (_stamp(st), users)
        return users

    # -- a directory of per-user files ----------------------------------------------------

    def _from_directory(self, user: str) -> str | None:
        where = f"status directory {self.path}"
        if not _safe_file_name(user):
            log.warning(f"{where}: refused user name {log.printable(user)!r} "
                        "(not usable as a file name)")
            return None
        path = f"{self.path}/{user}"
        try:
            link = os.lstat(path)
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise FileBackendError(f"{where}: no such directory") from None
            return None
        except OSError as e:
            if not os.access(self.path, os.X_OK):
                raise FileBackendError(f"{where}: {e.strerror}") from None
            log.warning(f"{where}: {user}: {e.strerror}; skipped")
            return None
        target = path
        if stat.S_ISLNK(link.st_mode):
            target = os.path.realpath(path)
            top = os.path.realpath(self.path)
            if not target.startswith(top + "/"):
                log.warning(f"{where}: {user} is a symlink to {log.printable(target)!r}, "
                            "outside the directory; skipped")
                return None
        uid = None
        if self.owner_must_match:
            uid = self._local_uid(where, user)
            if uid is None:
                return None
            if link.st_uid != uid:
                log.warning(f"{where}: {user} is owned by uid {link.st_uid}, not by {user} "
                            f"(uid {uid}); skipped (owner_must_match)")
                return None
        try:
            # O_NOFOLLOW: the symlink was resolved and checked above; a link swapped in since
            # is refused. O_NONBLOCK: a FIFO must not hang the lookup (and is refused below).
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            log.warning(f"{where}: {user}: {e.strerror}; skipped")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                log.warning(f"{where}: {user} is not a regular file; skipped")
                return None
            if uid is not None and st.st_uid != uid:
                log.warning(f"{where}: {user} leads to a file owned by uid {st.st_uid}, not "
                            f"by {user} (uid {uid}); skipped (owner_must_match)")
                return None
            data, more = read_capped(fd, self.max_bytes)
        except OSError as e:
            log.warning(f"{where}: {user}: {e.strerror}; skipped")
            return None
        finally:
            os.close(fd)
        if more:
            log.warning(f"{where}: {user} is larger than max_bytes = {self.max_bytes}; "
                        "skipped")
            return None
        return data.decode("utf-8", "replace")

    @staticmethod
    def _local_uid(where: str, user: str) -> int | None:
        import pwd

        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            log.warning(f"{where}: {user} has a file but no local account; skipped "
                        "(owner_must_match)")
            return None
