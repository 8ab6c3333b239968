"""``type = "local"``: the host's own users, as classic fingerd shows them.

::

    [[backend]]
    type = "local"
    # uid_min = 1000           # default: UID_MIN and UID_MAX from /etc/login.defs,
    # uid_max = 60000          # else 1000..60000: regular users only
    # form = "short"           # answer to a query without /W: "short" or "long"
    # show_private_homes = false   # show users whose home the service cannot enter

The answer is produced here, in Python, in the format of Debian's ``finger`` program
(bsd-finger 0.17, ``lprint.c`` and ``sprint.c``), so that clients see what they are used to,
without a program started per query:

- ``/W user`` gets the long form (``finger -l user``): login, name (GECOS, ``&`` expanded),
  directory, shell, office and phones, one line per login session from utmp with idle time
  and "(messages off)", else the last login (lastlog; wtmp when lastlog has no record), mail
  status from the mail spool's times, and ``~/.pgpkey``, ``~/.project`` and ``~/.plan``.
- ``user`` gets the short form (``finger -s user``), or the long form with ``form = "long"``
  (what Debian's in.fingerd answers, since ``finger user`` defaults to long).
- An empty query, when ``[server] list_users = true``, lists the logged-in users in the short
  form (``finger``), or the long form for ``/W`` (``finger -l``).

Who is shown: accounts from the passwd database (NSS: files, LDAP, ...) whose UID lies in the
range, and who have no ``~/.nofinger``. Others, root and system accounts by default, are not
known to this backend. Names are looked up exactly (case-sensitive, no real-name matching).
A user whose home directory the service cannot search (mode 0700, what Debian's adduser
creates since bookworm) might have a ``~/.nofinger`` that cannot be seen, so is not shown
either, unless ``show_private_homes = true``.

Files are read as the service user: a ``~/.plan`` that it cannot read is not shown. Like
bsd-finger, the dot files are shown only if they are regular files (not symlinks), and at most
``max_file_bytes`` of each. Control characters in them become ``^X``, as finger prints them.

Per-connection cost: ``pwd`` and ``_struct`` are built into the interpreter; nothing else
is imported.
"""

from __future__ import annotations

import os
import stat
import time

from fingerd import log
from fingerd.backend import Backend
from fingerd.backends._read import read_capped

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pwd
    from collections.abc import Iterator

    from fingerd.config import Options
    from fingerd.protocol import Query

LOGIN_DEFS = "/etc/login.defs"
DEFAULT_UID_MIN, DEFAULT_UID_MAX = 1000, 60000  # login.defs(5) defaults
UTMP = "/run/utmp"  # glibc's _PATH_UTMP is /var/run/utmp, a symlink to /run on Debian
WTMP = "/var/log/wtmp"
LASTLOG = "/var/log/lastlog"
MAIL_DIR = "/var/mail"
DEV_DIR = "/dev"
DOT_FILES = ((".pgpkey", "PGP key:"), (".project", "Project:"), (".plan", "Plan:"))

# struct utmp and struct lastlog as glibc lays them out on Linux (x86_64 and the other 64-bit
# ports with 32-bit time compatibility): see utmp(5) and <bits/utmp.h>.
#   utmp:  ut_type, pad, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256],
#          ut_exit{e_termination, e_exit}, ut_session, ut_tv{sec, usec}, ut_addr_v6[4], unused[20]
UTMP_FORMAT = "=h2xi32s4s32s256s2hi2i4i20x"
UTMP_SIZE = 384
USER_PROCESS = 7
#   lastlog: ll_time, ll_line[32], ll_host[256]
LASTLOG_FORMAT = "=i32s256s"
LASTLOG_SIZE = 292

_MAX_UTMP_BYTES = 4 * 1024 * 1024  # ~11000 sessions
_MAX_WTMP_SCAN = 4 * 1024 * 1024  # how far back from its end wtmp is searched
_HALF_YEAR = 86400 * 365 // 2  # bsd-finger: SECSPERDAY * DAYSPERNYEAR / 2
_TALKABLE = 0o220  # a terminal is writable (mesg y) when group and owner may write
_MAX_NAME = 32  # UT_NAMESIZE
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# bsd-finger prints control characters as ^X (display.c); so does this backend.
_CARET = {c: f"^{chr(c + 64)}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20))}
_CARET[0x7F] = "^?"


def valid_name(name: str) -> bool:
    """A strict account-name pattern: what useradd accepts by default, and no more.

    ``[A-Za-z0-9._-]``, at most 32 characters, not starting with ``-`` or ``.``, optionally one
    trailing ``$`` (Samba machine accounts). Nothing else reaches the passwd database.
    """
    if name.endswith("$"):
        name = name[:-1]
    return (0 < len(name) <= _MAX_NAME and name[0] not in "-." and name.isascii()
            and all(c in _NAME_CHARS for c in name))


def login_defs_range(path: str = LOGIN_DEFS) -> tuple[int, int]:
    """UID_MIN and UID_MAX from login.defs(5), or its defaults where missing or unreadable."""
    values = {"UID_MIN": DEFAULT_UID_MIN, "UID_MAX": DEFAULT_UID_MAX}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(256 * 1024)
    except OSError:
        return DEFAULT_UID_MIN, DEFAULT_UID_MAX
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in values:
            try:
                values[words[0]] = int(words[1], 0)
            except ValueError:
                log.warning(f"{path}: {words[0]} {log.printable(words[1])!r} is not a number; "
                            f"using {values[words[0]]}")
    return values["UID_MIN"], values["UID_MAX"]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def visible(text: str) -> str:
    """Control characters as bsd-finger shows them (``^[`` for ESC); tabs and newlines stay."""
    return text.translate(_CARET)


class Session:
    """One utmp USER_PROCESS record (a login), or the last-login record (``live`` False)."""

    __slots__ = ("host", "idle", "line", "live", "login", "writable")

    def __init__(self, line: str, host: str, login: int, live: bool = True) -> None:
        self.line, self.host, self.login, self.live = line, host, login, live
        self.idle = 0
        self.writable = True


def read_utmp(path: str) -> Iterator[tuple[str, Session]]:
    """(user, session) for every login in utmp(5): USER_PROCESS records with a user name."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_UTMP_BYTES)
    except FileNotFoundError:
        return  # nobody has logged in since boot (or the host keeps no utmp)
    except OSError as e:
        log.warning(f"{path}: {e.strerror}; logged-in users are not shown")
        return
    for offset in range(0, len(data) - UTMP_SIZE + 1, UTMP_SIZE):
        (kind, _pid, line, _id, user, host, _term, _exit, _session, sec, _usec,
         *_addr) = struct.unpack_from(UTMP_FORMAT, data, offset)
        if kind == USER_PROCESS and user[:1] not in (b"", b"\0"):
            yield _text(user), Session(_text(line), _text(host), sec)


def last_login_lastlog(path: str, uid: int) -> Session | None:
    """The lastlog(8) record of ``uid``; None if there is none (never, or no lastlog)."""
    import struct

    try:
        with open(path, "rb") as f:
            f.seek(uid * LASTLOG_SIZE)
            data = f.read(LASTLOG_SIZE)
    except (OSError, OverflowError, ValueError):
        return None
    if len(data) != LASTLOG_SIZE:
        return None
    when, line, host = struct.unpack(LASTLOG_FORMAT, data)
    return Session(_text(line), _text(host), when, live=False) if when else None


def last_login_wtmp(path: str, user: str) -> Session | None:
    """The latest login of ``user`` in wtmp(5), searched backwards over its last few MiB."""
    import struct

    wanted = user.encode()
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            end -= end % UTMP_SIZE
            start = max(0, end - _MAX_WTMP_SCAN)
            while end > start:
                size = min(end - start, 256 * UTMP_SIZE)
                f.seek(end - size)
                data = f.read(size)
                end -= size
                for offset in range(len(data) - UTMP_SIZE, -1, -UTMP_SIZE):
                    (kind, _pid, line, _id, name, host, _t, _e, _s, sec, _u,
                     *_a) = struct.unpack_from(UTMP_FORMAT, data, offset)
                    if kind == USER_PROCESS and name.split(b"\0", 1)[0] == wanted:
                        return Session(_text(line), _text(host), sec, live=False)
    except OSError:
        pass
    return None


def _tty_state(session: Session, dev_dir: str) -> None:
    """Idle time and ``mesg`` state from the terminal device, as bsd-finger finds them."""
    line = session.line
    if line.startswith(":"):  # an X display (XDM's ":0"): no device
        session.idle, session.writable = 0, False
        return
    if not line or line.startswith("/") or ".." in line.split("/"):
        return  # not a device name: say nothing rather than stat() some other file
    try:
        st = os.stat(f"{dev_dir}/{line}")
    except OSError:
        return  # unknown: no idle time, and no claim that messages are off
    now = int(time.time())
    session.idle = max(0, now - int(st.st_atime))
    session.writable = st.st_mode & _TALKABLE == _TALKABLE


def _show_file(path: str, limit: int) -> str | None:
    """A dot file's content if it is a readable regular file (bsd-finger's show_text)."""
    try:
        # O_NOFOLLOW: bsd-finger refuses symlinks (lstat + S_ISREG); O_NONBLOCK: a FIFO
        # named .plan must not hang the lookup.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data, _ = read_capped(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def prphone(num: str) -> str:
    """A phone number of digits only, punctuated as bsd-finger does (util.c prphone)."""
    if not num.isascii() or not num.isdigit() or len(num) not in (4, 5, 7, 10, 11):
        return num
    n = len(num)
    if n == 11:
        return f"+{num[0]}-{num[1:4]}-{num[4:7]}-{num[7:]}"
    if n == 10:
        return f"{num[0:3]}-{num[3:6]}-{num[6:]}"
    if n == 7:
        return f"{num[0:3]}-{num[3:]}"
    if n == 5:
        return f"x{num[0]}-{num[1:]}"
    return f"x{num}"


class Person:
    """What finger shows about one account."""

    def __init__(self, pw: pwd.struct_passwd) -> None:
        self.name = pw.pw_name
        self.uid = pw.pw_uid
        self.dir = pw.pw_dir
        self.shell = pw.pw_shell or "/bin/sh"  # _PATH_BSHELL
        gecos = pw.pw_gecos
        if gecos.startswith("*"):  # bsd-finger skips one leading asterisk
            gecos = gecos[1:]
        # chfn(1)'s fields, by position: full name, room, work phone, home phone (, other).
        fields = [*gecos.split(","), "", "", "", ""][:4]
        capitalised = self.name[:1].upper() + self.name[1:]
        self.realname = fields[0].replace("&", capitalised)
        self.office, self.officephone, self.homephone = fields[1:4]
        self.sessions: list[Session] = []
        self.mail_received = self.mail_read = -1


class LocalBackend(Backend):
    """Accounts of this host, in the format of Debian's finger."""

    blocking = True  # reads utmp, lastlog, home directories

    def __init__(self, options: Options) -> None:
        defs_min, defs_max = login_defs_range()  # one small file; read even if overridden
        self.uid_min = options.integer("uid_min", defs_min)
        self.uid_max = options.integer("uid_max", defs_max)
        if self.uid_min > self.uid_max:
            raise options.error("uid_max", f"must not be below uid_min ({self.uid_min}), "
                                f"got {self.uid_max}")
        form = options.string("form", "short")
        if form not in ("short", "long"):
            raise options.error("form", f'must be "short" or "long", got {form!r}')
        self.long_by_default = form == "long"
        self.show_private_homes = options.boolean("show_private_homes", False)
        self.max_file_bytes = options.integer("max_file_bytes", 65536, minimum=0,
                                              maximum=16 * 1024 * 1024)
        self.utmp = options.string("utmp", UTMP)
        self.wtmp = options.string("wtmp", WTMP)
        self.lastlog = options.string("lastlog", LASTLOG)
        self.mail_dir = options.string("mail_dir", MAIL_DIR)
        self.dev_dir = DEV_DIR

    # -- the contract -----------------------------------------------------------------------

    def lookup(self, query: Query) -> str | None:
        pw = self._account(query.user)
        if pw is None:
            return None
        person = Person(pw)
        for user, session in read_utmp(self.utmp):
            if user == person.name:
                _tty_state(session, self.dev_dir)
                person.sessions.append(session)
        self._add_last_login(person)
        if query.verbose or self.long_by_default:
            return visible(self._long([person]))
        return visible(_short([person], time.time()))

    def list_users(self, query: Query) -> str | None:
        people: dict[str, Person | None] = {}
        for user, session in read_utmp(self.utmp):
            if user not in people:
                pw = self._account(user)
                people[user] = Person(pw) if pw is not None else None
            person = people[user]
            if person is not None:
                _tty_state(session, self.dev_dir)
                person.sessions.append(session)
        shown = [p for p in people.values() if p is not None]
        if not shown:
            return "No one logged on."
        if query.verbose:
            for person in shown:
                self._add_last_login(person)
            return visible(self._long(shown))
        return visible(_short(sorted(shown, key=lambda p: p.name), time.time()))

    # -- who is shown -----------------------------------------------------------------------

    def _account(self, name: str) -> pwd.struct_passwd | None:
        """The passwd entry for ``name`` if this backend may show it, else None."""
        if not valid_name(name):
            return None
        import pwd

        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        if not self.uid_min <= pw.pw_uid <= self.uid_max:
            return None
        try:
            os.lstat(f"{pw.pw_dir}/.nofinger")
        except FileNotFoundError:
            return pw  # no ~/.nofinger (or no home at all: nothing to opt out with)
        except OSError:
            # The home directory cannot be searched (0700, Debian's default since bookworm):
            # whether the user opted out cannot be seen, so by default they are not shown.
            return pw if self.show_private_homes else None
        return None  # ~/.nofinger: the user asked not to be shown

    def _add_last_login(self, person: Person) -> None:
        """bsd-finger's enter_lastlog(): the last login, unless it is a current session."""
        last = last_login_lastlog(self.lastlog, person.uid)
        if last is None and self.wtmp:
            last = last_login_wtmp(self.wtmp, person.name)
        if last is None:
            last = Session("", "", 0, live=False)  # "Never logged in."
        sessions = person.sessions
        if sessions:
            if not last.login:
                return
            # Shown if some current login is older than it, and it is not one of them.
            if not any(s.login < last.login for s in sessions) or any(
                    s.line[:32] == last.line[:32] for s in sessions):
                return
        sessions.append(last)

    def _mail(self, person: Person) -> None:
        try:
            st = os.stat(f"{self.mail_dir}/{person.name}")
        except OSError:
            return
        if st.st_size:
            person.mail_received, person.mail_read = int(st.st_mtime), int(st.st_atime)

    # -- the formats ------------------------------------------------------------------------

    def _long(self, people: list[Person]) -> str:
        """``finger -l``: bsd-finger's lflag_print()."""
        now = time.time()
        out: list[str] = []
        for number, person in enumerate(people):
            if number:
                out.append("\n")
            self._mail(person)
            _lprint(person, now, out)
            for file_name, header in DOT_FILES:
                text = _show_file(f"{person.dir}/{file_name}", self.max_file_bytes)
                if text is None:
                    if file_name == ".plan":
                        out.append("No Plan.\n")
                    continue
                out.append(f"{header}\n{text}")
                if not text.endswith("\n"):
                    out.append("\n")
        return "".join(out)


def _width(text: str) -> int:
    """How many columns C's printf counts for ``text``: bytes, not characters."""
    return len(text.encode("utf-8", "replace"))


def _ljust(text: str, width: int) -> str:
    """printf's ``%-*s``: pad to ``width`` bytes (a negative width counts as positive)."""
    return text + " " * max(0, abs(width) - _width(text))


def _cut(text: str, size: int) -> str:
    """printf's ``%.*s``: at most ``size`` bytes (a negative precision means no limit)."""
    data = text.encode("utf-8", "replace")
    return text if size < 0 or len(data) <= size else data[:size].decode("utf-8", "ignore")


def _short(people: list[Person], now: float) -> str:
    """``finger -s``: bsd-finger's sflag_print(), for a terminal of 80 columns."""
    space = 80 - 50
    name_w = max([len("Login  ") + 1, *(_width(p.name) for p in people)])
    real_w = max([len("Login  ") + 1, *(_width(p.realname) or 1 for p in people)])
    if name_w + real_w > space:
        real_w = space - name_w
    if name_w + real_w < space - 2:
        name_w += 1
        real_w += 1
    out = [f"{_ljust('Login', name_w)} {_ljust('Name', real_w)}  Tty      Idle  Login Time"
           "   Office     Office Phone\n"]
    for person in people:
        for s in person.sessions:
            out.append(f"{_ljust(_cut(person.name, name_w), name_w)} "
                       f"{_ljust(_cut(person.realname, real_w), real_w)} ")
            if not s.login:
                out.append("  *     *  No logins   ")
            else:
                out.append("*" if s.live and not s.writable else " ")
                out.append(f"{_ljust(_cut(s.line, 7), 7)} " if s.line else "        ")
                out.append(_short_idle(s.idle) + "  " if s.live else "    *  ")
                stamp = time.asctime(time.localtime(s.login))  # ctime(3), without the LF
                out.append(stamp[4:10])
                out.append(f"  {stamp[20:24]}" if now - s.login >= _HALF_YEAR
                           else f" {stamp[11:16]}")
            if s.host:
                out.append(f" ({s.host})")
            else:
                if person.office:
                    out.append(f" {_ljust(_cut(person.office, 10), 10)}")
                elif person.officephone:
                    out.append(f" {_ljust(' ', 10)}")
                if person.officephone:
                    out.append(f" {_cut(prphone(person.officephone), 14)}")
            out.append("\n")
    return "".join(out)


def _short_idle(idle: int) -> str:
    """bsd-finger's stimeprint(): minutes, hours:minutes or days, five columns."""
    days, rest = divmod(idle, 86400)
    days %= 365  # gmtime()'s tm_yday wraps after a year; so does finger's
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        return f"{days:4d}d"
    if hours:
        return f"{hours:2d}:{minutes:02d}"
    return f"{minutes:5d}" if minutes else "     "


def _when(t: int, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(t))


def _demi_print(text: str, odd: bool, last: list[int], out: list[str]) -> bool:
    """bsd-finger's demi_print(): two fields per line, the second from column 40."""
    if odd:
        room = max(5 * 8, last[0])
        if (room // 8 + 1) * 8 + _width(text) <= 80:
            tabs = ""
            width = last[0]
            while width < 4 * 8:
                tabs += "\t"
                width += 8
            out.append(f"{tabs}\t{text}\n")
        else:
            out.append(f"\n{text}")
            odd = not odd
    else:
        out.append(text)
    last[0] = _width(text)
    return not odd


def _lprint(person: Person, now: float, out: list[str]) -> None:
    """bsd-finger's lprint(): everything of the long form but the dot files."""
    out.append(f"Login: {_ljust(person.name, 15)}\t\t\tName: {person.realname}\n"
               f"Directory: {_ljust(person.dir, 25)}\tShell: {person.shell}\n")
    odd, last = False, [0]
    office, officephone, homephone = person.office, person.officephone, person.homephone
    if office and officephone and _width(office) + _width(officephone) + 9 <= 40:
        odd = _demi_print(f"Office: {office}, {prphone(officephone)}", odd, last, out)
    else:
        if office:
            odd = _demi_print(f"Office: {office}", odd, last, out)
        if officephone:
            odd = _demi_print(f"Office Phone: {prphone(officephone)}", odd, last, out)
    if homephone:
        odd = _demi_print(f"Home Phone: {prphone(homephone)}", odd, last, out)
    if odd:
        out.append("\n")

    widest = max((_width(s.line) for s in person.sessions), default=-1)
    for s in person.sessions:
        if s.live:
            out.append(f"On since {_when(s.login, '%a %b %e %R (%Z)')} on {s.line}")
            if s.host:
                out.append(f" from {s.host}")
            days, rest = divmod(s.idle, 86400)
            days %= 365  # gmtime()'s tm_yday
            hours, minutes, seconds = rest // 3600, rest % 3600 // 60, rest % 60
            idle = bool(days or hours or minutes or seconds)
            if idle:
                if s.host:
                    out.append("\n")
                out.append(" " * (widest - _width(s.line) + 3))
                if days:
                    out.append(f"{days} day{'' if days == 1 else 's'} ")
                if hours:
                    out.append(f"{hours} hour{'' if hours == 1 else 's'} ")
                if minutes and not days:
                    out.append(f"{minutes} minute{'' if minutes == 1 else 's'} ")
                if seconds and not days and not hours:
                    out.append(f"{seconds} second{'' if seconds == 1 else 's'} ")
                out.append("idle")
            if not s.writable:
                out.append("\n     (messages off)" if idle else " (messages off)")
        elif not s.login:
            out.append("Never logged in.")
        else:
            fmt = "%a %b %e %R (%Z)" if now - s.login < _HALF_YEAR else "%a %b %e %R %Y (%Z)"
            out.append(f"Last login {_when(s.login, fmt)} on {s.line}")
            if s.host:
                out.append(f" from {s.host}")
        out.append("\n")

    # (bsd-finger also shows ~/.forward here, "Mail forwarded to"; that discloses addresses
    # and is left out.)
    if person.mail_received == -1:
        out.append("No mail.\n")
    elif person.mail_received > person.mail_read:
        out.append(f"New mail received {_when(person.mail_received, '%a %b %e %R %Y (%Z)')}\n"
                   f"     Unread since {_when(person.mail_read, '%a %b %e %R %Y (%Z)')}\n")
    else:
        out.append(f"Mail last read {_when(person.mail_read, '%a %b %e %R %Y (%Z)')}\n")
