"""The output of Debian's ``finger`` program (bsd-finger 0.17): data in, text out.

``long_form`` is ``finger -l`` (lprint.c: lflag_print, lprint, demi_print), ``short_form`` is
``finger -s`` and the listing of ``finger`` (sprint.c: sflag_print). The caller gathers what
finger would find (the account, its login sessions with idle times, the last login, the mail
spool's times, the dot files' texts) into :class:`Person` values; nothing here reads a file.
Times are shown in the process's local time zone (``TZ``), as finger shows them.

What is shown of each person is the set ``Person.shown``, from :data:`FIELDS` (RFC 1288
§3.2.3: the admin tailors the "atoms" of information given out). With every field it is
exactly finger's output; a field left out is left out of the lines that carry it, and a line
left with nothing is not printed ("No Plan." is the plan field, "Never logged in." the last
login).

Tested against captured output of the real program (tests/data/bsdfinger/).
"""

import time

# What can be shown, in the order finger prints it.
FIELDS = ("login", "name", "office", "phone", "directory", "shell", "on-since", "from-host",
          "last-login", "mail", "pgpkey", "project", "plan")
ALL = frozenset(FIELDS)

_HALF_YEAR = 86400 * 365 // 2  # bsd-finger: SECSPERDAY * DAYSPERNYEAR / 2
_LONG_DATE = "%a %b %e %R %Y (%Z)"
_DATE = "%a %b %e %R (%Z)"

# bsd-finger prints control characters as ^X (display.c); tabs and newlines stay.
_CARET = {c: f"^{chr(c + 64)}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20))}
_CARET[0x7F] = "^?"


def visible(text: str) -> str:
    """Control characters as bsd-finger shows them (``^[`` for ESC); tabs and newlines stay."""
    return text.translate(_CARET)


class Session:
    """A login session from utmp (``live``), or the last login (not ``live``; ``login`` 0
    for "Never logged in."). ``idle`` (seconds) and ``writable`` (``mesg y``) are what
    finger reads from the terminal device."""

    __slots__ = ("host", "idle", "line", "live", "login", "writable")

    def __init__(self, line: str, host: str, login: int, live: bool = True, idle: int = 0,
                 writable: bool = True) -> None:
        self.line, self.host, self.login, self.live = line, host, login, live
        self.idle, self.writable = idle, writable


class Person:
    """What finger shows about one account.

    Built from the passwd entry's name, GECOS field, home directory and shell; the caller
    adds the live ``sessions``, the last login (:func:`add_last_login`), the mail spool's
    times (``mail_received``, ``mail_read``: its modification and access times, -1 without
    mail), the dot files' texts (``pgpkey``, ``project``, ``plan``: None where finger would
    show none), and may narrow ``shown``, the fields printed.
    """

    def __init__(self, name: str, gecos: str, directory: str, shell: str) -> None:
        self.name = name
        self.dir = directory
        self.shell = shell or "/bin/sh"  # _PATH_BSHELL
        if gecos.startswith("*"):  # bsd-finger skips one leading asterisk
            gecos = gecos[1:]
        # chfn(1)'s fields, by position: full name, room, work phone, home phone (, other).
        fields = [*gecos.split(","), "", "", "", ""][:4]
        capitalised = name[:1].upper() + name[1:]
        self.realname = fields[0].replace("&", capitalised)
        self.office, self.officephone, self.homephone = fields[1:4]
        self.sessions: list[Session] = []
        self.last_login: Session | None = None  # None: not looked up (the short listing)
        self.shown = ALL
        self.mail_received = self.mail_read = -1
        self.pgpkey: str | None = None
        self.project: str | None = None
        self.plan: str | None = None


def add_last_login(person: "Person", last: "Session | None") -> None:
    """The last login (``last`` None: never logged in), shown as bsd-finger's enter_lastlog()
    decides (see :func:`_entries`)."""
    person.last_login = last if last is not None else Session("", "", 0, live=False)


def _entries(person: "Person") -> "list[Session]":
    """The session lines of ``person``: the live sessions, then the last login unless it is
    one of them (bsd-finger's enter_lastlog()). Without the on-since field the live sessions
    are not shown and the last login always is, as if nobody were logged in."""
    shown = person.shown
    live = person.sessions if "on-since" in shown else []
    last = person.last_login
    if "last-login" not in shown or last is None:
        return list(live)
    if live and (not last.login or not any(s.login < last.login for s in live) or any(
            s.line[:32] == last.line[:32] for s in live)):
        return list(live)
    return [*live, last]


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


# -- printf as finger uses it: widths and precisions count bytes ----------------------------------

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


def _when(t: int, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(t))


# -- finger -s ------------------------------------------------------------------------------------

def short_form(people: "list[Person]", now: float) -> str:
    """``finger -s``: bsd-finger's sflag_print(), for a terminal of 80 columns."""
    space = 80 - 50
    logins = [p.name if "login" in p.shown else "" for p in people]
    names = [p.realname if "name" in p.shown else "" for p in people]
    name_w = max([len("Login  ") + 1, *(_width(n) for n in logins)])
    real_w = max([len("Login  ") + 1, *(_width(n) or 1 for n in names)])
    if name_w + real_w > space:
        real_w = space - name_w
    if name_w + real_w < space - 2:
        name_w += 1
        real_w += 1
    out = [f"{_ljust('Login', name_w)} {_ljust('Name', real_w)}  Tty      Idle  Login Time"
           "   Office     Office Phone\n"]
    for person, login, name in zip(people, logins, names, strict=True):
        shown = person.shown
        office = person.office if "office" in shown else ""
        officephone = person.officephone if "phone" in shown else ""
        # One row per session; one without session columns when none is shown.
        rows: list[Session | None] = [*_entries(person)] or [None]
        for s in rows:
            out.append(f"{_ljust(_cut(login, name_w), name_w)} "
                       f"{_ljust(_cut(name, real_w), real_w)} ")
            if s is None:
                out.append(" " * 28)
            elif not s.login:
                out.append("  *     *  No logins   ")
            else:
                out.append("*" if s.live and not s.writable else " ")
                out.append(f"{_ljust(_cut(s.line, 7), 7)} " if s.line else "        ")
                out.append(short_idle(s.idle) + "  " if s.live else "    *  ")
                stamp = time.asctime(time.localtime(s.login))  # ctime(3), without the LF
                out.append(stamp[4:10])
                out.append(f"  {stamp[20:24]}" if now - s.login >= _HALF_YEAR
                           else f" {stamp[11:16]}")
            if s is not None and s.host and "from-host" in shown:
                out.append(f" ({s.host})")
            else:
                if office:
                    out.append(f" {_ljust(_cut(office, 10), 10)}")
                elif officephone:
                    out.append(f" {_ljust(' ', 10)}")
                if officephone:
                    out.append(f" {_cut(prphone(officephone), 14)}")
            out.append("\n")
    return visible("".join(out))


def short_idle(idle: int) -> str:
    """bsd-finger's stimeprint(): minutes, hours:minutes or days, five columns."""
    days, rest = divmod(idle, 86400)
    days %= 365  # gmtime()'s tm_yday wraps after a year; so does finger's
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        return f"{days:4d}d"
    if hours:
        return f"{hours:2d}:{minutes:02d}"
    return f"{minutes:5d}" if minutes else "     "


# -- finger -l ------------------------------------------------------------------------------------

def long_form(people: "list[Person]", now: float) -> str:
    """``finger -l``: bsd-finger's lflag_print(), people separated by an empty line."""
    out: list[str] = []
    for number, person in enumerate(people):
        if number:
            out.append("\n")
        _lprint(person, now, out)
        for field, text, header in (("pgpkey", person.pgpkey, "PGP key:"),
                                    ("project", person.project, "Project:"),
                                    ("plan", person.plan, "Plan:")):
            if field not in person.shown:
                continue
            if text is None:
                if header == "Plan:":
                    out.append("No Plan.\n")
                continue
            out.append(f"{header}\n{text}")
            if not text.endswith("\n"):
                out.append("\n")
    return visible("".join(out))


def long_idle(idle: int) -> str:
    """The idle time of lprint(): "3 hours 2 minutes idle", "" when not idle."""
    days, rest = divmod(idle, 86400)
    days %= 365  # gmtime()'s tm_yday
    hours, minutes, seconds = rest // 3600, rest % 3600 // 60, rest % 60
    if not (days or hours or minutes or seconds):
        return ""
    words = []
    if days:
        words.append(f"{days} day{'' if days == 1 else 's'} ")
    if hours:
        words.append(f"{hours} hour{'' if hours == 1 else 's'} ")
    if minutes and not days:
        words.append(f"{minutes} minute{'' if minutes == 1 else 's'} ")
    if seconds and not days and not hours:
        words.append(f"{seconds} second{'' if seconds == 1 else 's'} ")
    return "".join(words) + "idle"


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


def _pair(first: str, gap: str, second: str) -> str:
    """lprint()'s two-column lines ("Login: x\t\t\tName: y"): both, one, or none."""
    if first and second:
        return f"{first}{gap}{second}\n"
    return f"{first.rstrip()}{second}\n" if first or second else ""


def _lprint(person: "Person", now: float, out: list[str]) -> None:
    """bsd-finger's lprint(): everything of the long form but the dot files."""
    shown = person.shown
    out.append(_pair(f"Login: {_ljust(person.name, 15)}" if "login" in shown else "", "\t\t\t",
                     f"Name: {person.realname}" if "name" in shown else ""))
    out.append(_pair(f"Directory: {_ljust(person.dir, 25)}" if "directory" in shown else "",
                     "\t", f"Shell: {person.shell}" if "shell" in shown else ""))
    odd, last = False, [0]
    office = person.office if "office" in shown else ""
    officephone, homephone = (person.officephone, person.homephone) if "phone" in shown else (
        "", "")
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

    entries = _entries(person)
    with_host = "from-host" in shown
    widest = max((_width(s.line) for s in entries), default=-1)
    for s in entries:
        host = s.host if with_host else ""
        if s.live:
            out.append(f"On since {_when(s.login, _DATE)} on {s.line}")
            if host:
                out.append(f" from {host}")
            idle = long_idle(s.idle)
            if idle:
                if host:
                    out.append("\n")
                out.append(" " * (widest - _width(s.line) + 3) + idle)
            if not s.writable:
                out.append("\n     (messages off)" if idle else " (messages off)")
        elif not s.login:
            out.append("Never logged in.")
        else:
            fmt = _DATE if now - s.login < _HALF_YEAR else _LONG_DATE
            out.append(f"Last login {_when(s.login, fmt)} on {s.line}")
            if host:
                out.append(f" from {host}")
        out.append("\n")

    # (bsd-finger also shows ~/.forward here, "Mail forwarded to"; that discloses addresses
    # and is left out.)
    if "mail" not in shown:
        return
    if person.mail_received == -1:
        out.append("No mail.\n")
    elif person.mail_received > person.mail_read:
        out.append(f"New mail received {_when(person.mail_received, _LONG_DATE)}\n"
                   f"     Unread since {_when(person.mail_read, _LONG_DATE)}\n")
    else:
        out.append(f"Mail last read {_when(person.mail_read, _LONG_DATE)}\n")
