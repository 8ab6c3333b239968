"""Login records: who is logged in (utmp(5)), and the last login (lastlog(8), wtmp(5)).

Functions over bytes (``parse_utmp``, ``parse_lastlog``, ``last_login_in``), and the bounded
reads that feed them (``read_utmp``, ``read_lastlog``, ``read_wtmp_last``). Nothing here knows
who may be shown or how finger prints it: that is fingerd/backends/local.py and
fingerd/bsdfinger.py.

The records are glibc's on Linux (x86_64 and the other 64-bit ports with 32-bit time
compatibility), see utmp(5) and <bits/utmp.h>::

    struct utmp    ut_type, pad, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256],
                   ut_exit{e_termination, e_exit}, ut_session, ut_tv{sec, usec},
                   ut_addr_v6[4], unused[20]                                   (384 bytes)
    struct lastlog ll_time, ll_line[32], ll_host[256]                           (292 bytes)

On the per-connection path: ``_struct`` is built into the interpreter (``struct``, the Python
module over it, is not needed).
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import struct as _struct  # the same Struct class, with its documentation
else:
    import _struct

UTMP_FORMAT = "=h2xi32s4s32s256s2hi2i4i20x"
UTMP_SIZE = 384
USER_PROCESS = 7
LASTLOG_FORMAT = "=i32s256s"
LASTLOG_SIZE = 292

MAX_UTMP_BYTES = 4 * 1024 * 1024  # ~11000 sessions
MAX_WTMP_SCAN = 4 * 1024 * 1024  # how far back from its end wtmp is searched
_WTMP_CHUNK = 256 * UTMP_SIZE

_UTMP = _struct.Struct(UTMP_FORMAT)
_LASTLOG = _struct.Struct(LASTLOG_FORMAT)
assert _UTMP.size == UTMP_SIZE and _LASTLOG.size == LASTLOG_SIZE


class Login:
    """One login: a utmp/wtmp USER_PROCESS record, or a lastlog record (``user`` empty)."""

    __slots__ = ("host", "line", "time", "user")

    def __init__(self, user: str, line: str, host: str, time: int) -> None:
        self.user, self.line, self.host, self.time = user, line, host, time

    def __repr__(self) -> str:
        return f"Login({self.user!r}, {self.line!r}, {self.host!r}, {self.time!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Login):
            return NotImplemented
        return (self.user, self.line, self.host, self.time) == (
            other.user, other.line, other.host, other.time)

    __hash__ = None  # type: ignore[assignment]  # mutable


def text(raw: bytes) -> str:
    """A fixed-size C string field: up to its first NUL, UTF-8 with replacement."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_utmp(data: bytes) -> "list[Login]":
    """Every login in utmp(5) bytes: USER_PROCESS records with a user name, in file order.
    A partial record at the end is ignored."""
    logins = []
    whole = len(data) - len(data) % UTMP_SIZE
    for (kind, _pid, line, _id, user, host, _term, _exit, _session, sec, _usec,
         *_addr) in _UTMP.iter_unpack(memoryview(data)[:whole]):
        if kind == USER_PROCESS and user[:1] not in (b"", b"\0"):
            logins.append(Login(text(user), text(line), text(host), sec))
    return logins


def last_login_in(data: bytes, user: str) -> "Login | None":
    """The latest USER_PROCESS record of ``user`` in a run of whole wtmp(5) records (the one
    nearest the end), or None."""
    wanted = user.encode()
    for offset in range(len(data) - UTMP_SIZE, -1, -UTMP_SIZE):
        (kind, _pid, line, _id, name, host, _t, _e, _s, sec, _u,
         *_a) = _UTMP.unpack_from(data, offset)
        if kind == USER_PROCESS and name.split(b"\0", 1)[0] == wanted:
            return Login(user, text(line), text(host), sec)
    return None


def parse_lastlog(record: bytes) -> "Login | None":
    """One struct lastlog; None for a short record or one never written (time 0)."""
    if len(record) != LASTLOG_SIZE:
        return None
    when, line, host = _LASTLOG.unpack(record)
    return Login("", text(line), text(host), when) if when else None


def read_utmp(path: str) -> "list[Login]":
    """The logins in the utmp file at ``path`` (its first MAX_UTMP_BYTES). A missing file is
    nobody logged in (no login since boot, or a host that keeps no utmp); other errors raise
    OSError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_UTMP_BYTES)
    except FileNotFoundError:
        return []
    return parse_utmp(data)


def read_lastlog(path: str, uid: int) -> "Login | None":
    """The lastlog(8) record of ``uid`` (at offset uid * 292); None if there is none: never
    logged in, no lastlog, or it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(uid * LASTLOG_SIZE)
            record = f.read(LASTLOG_SIZE)
    except (OSError, OverflowError, ValueError):
        return None
    return parse_lastlog(record)


def read_wtmp_last(path: str, user: str) -> "Login | None":
    """The latest login of ``user`` in wtmp(5), searched backwards, a chunk at a time, over
    its last MAX_WTMP_SCAN bytes; None if not found or the file cannot be read."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            end -= end % UTMP_SIZE
            start = max(0, end - MAX_WTMP_SCAN)
            while end > start:
                size = min(end - start, _WTMP_CHUNK)
                f.seek(end - size)
                data = f.read(size)
                end -= size
                found = last_login_in(data[:len(data) - len(data) % UTMP_SIZE], user)
                if found is not None:
                    return found
    except OSError:
        pass
    return None
