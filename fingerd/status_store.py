"""Where the status service keeps users' statuses: one small file per user in its state
directory (``StateDirectory=fingerd-status``: /var/lib/private/fingerd-status, which survives
restarts, reboots and upgrades, and which ``apt purge`` removes).

Each file is written whole and renamed into place (write, fsync, rename, fsync the
directory), so a reader sees the old status or the new one, never half of either, and of two
writers one wins whole; after a crash there is the old file or the new one, and at worst a
temporary file that the next start removes. A file is::

    fingerd-status 1 UID SET EXPIRES LF TEXT

UID is the account's when it was set: a status is not shown for a re-created account of the
same name. The file name is the user name, with anything but letters, digits, ``_`` and ``-``
(and ``.`` not in first place) percent-encoded, so that no name can reach another path.
"""

from __future__ import annotations

import os

from fingerd import log
from fingerd.status_protocol import MAX_TEXT_BYTES

MAGIC = b"fingerd-status 1 "
_MAX_FILE = len(MAGIC) + 3 * 21 + 1 + MAX_TEXT_BYTES  # header numbers: at most 20 digits each
_TEMP_PREFIX = ".tmp-"  # never the start of an encoded name (those cannot start with ".")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


class Status:
    __slots__ = ("expires_at", "set_at", "text", "uid")

    def __init__(self, uid: int, set_at: int, expires_at: int, text: str) -> None:
        self.uid, self.set_at, self.expires_at, self.text = uid, set_at, expires_at, text

    def expired(self, now: float) -> bool:
        return bool(self.expires_at) and self.expires_at <= now

    def __repr__(self) -> str:
        return (f"Status(uid={self.uid}, set_at={self.set_at}, expires_at={self.expires_at}, "
                f"text={self.text!r})")


def file_name(user: str) -> str:
    """The file name for ``user``: a single path component, never ``.``-something."""
    out = []
    for i, c in enumerate(user):
        if c in _SAFE and not (i == 0 and c == "."):
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)


def encode(status: Status) -> bytes:
    return MAGIC + b"%d %d %d\n" % (status.uid, status.set_at, status.expires_at) + \
        status.text.encode("utf-8")


def decode(data: bytes) -> Status:
    """Parse a status file; ValueError if it is not one."""
    if not data.startswith(MAGIC):
        raise ValueError("not a status file")
    head, newline, text = data[len(MAGIC):].partition(b"\n")
    words = head.split(b" ")
    if not newline or len(words) != 3 or not all(w.isdigit() for w in words):
        raise ValueError("bad header")
    uid, set_at, expires_at = (int(w) for w in words)
    return Status(uid, set_at, expires_at, text.decode("utf-8"))


class Store:
    """The statuses in ``directory`` (which must exist and be ours alone)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._counter = 0

    def _path(self, user: str) -> str:
        return os.path.join(self.directory, file_name(user))

    def get(self, user: str) -> Status | None:
        """The stored status of ``user``, or None (also for a file that cannot be used, which
        is logged)."""
        path = self._path(user)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:  # ELOOP: a symlink, which this service never makes
            log.warning(f"status file {path}: {e.strerror}; ignored")
            return None
        try:
            data = os.read(fd, _MAX_FILE + 1)
        finally:
            os.close(fd)
        try:
            if len(data) > _MAX_FILE:
                raise ValueError("too large")
            return decode(data)
        except ValueError as e:  # UnicodeDecodeError too
            log.warning(f"status file {path}: {e}; ignored")
            return None

    def put(self, user: str, status: Status) -> None:
        """Replace the status of ``user`` atomically and durably."""
        self._counter += 1
        temp = os.path.join(self.directory, f"{_TEMP_PREFIX}{os.getpid()}-{self._counter}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            try:
                view = memoryview(encode(status))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self._path(user))
        except BaseException:
            try:  # noqa: SIM105 (the same style as config.py)
                os.unlink(temp)
            except OSError:
                pass
            raise
        self._sync_directory()

    def remove(self, user: str) -> bool:
        """Remove the status of ``user``; False if there was none."""
        try:
            os.unlink(self._path(user))
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sweep(self, now: float) -> int:
        """Remove expired statuses and temporary files a crash left; returns how many."""
        removed = 0
        with os.scandir(self.directory) as entries:
            names = [e.name for e in entries]
        for name in names:
            path = os.path.join(self.directory, name)
            if not name.startswith(_TEMP_PREFIX):
                try:
                    with open(path, "rb") as f:
                        status = decode(f.read(_MAX_FILE + 1))
                except (OSError, ValueError):
                    continue  # get() logs it when somebody asks
                if not status.expired(now):
                    continue
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        return removed
