"""``type = "local"``: the host's own users, as classic fingerd shows them.

::

    [[backend]]
    type = "local"
    # uid_min = 1000           # default: UID_MIN and UID_MAX from /etc/login.defs,
    # uid_max = 60000          # else 1000..60000: regular users only
    # form = "short"           # answer to a query without /W: "short" or "long"
    # show_private_homes = false   # show users whose home the service cannot enter
    # fields = [...]             # what remote askers see (default: not from-host, directory,
    # local_fields = [...]       #   shell, mail); what this host and local_networks see (all)
    # local_networks = ["192.168.1.0/24"]

The answer is produced in Python, in the format of Debian's ``finger`` program (bsd-finger
0.17), so that clients see what they are used to, without a program started per query. This
module decides who is shown and gathers what finger would find; fingerd/utmp.py reads the
login records and fingerd/bsdfinger.py prints them:

- ``/W user`` gets the long form (``finger -l user``); ``user`` the short form (``finger -s
  user``), or the long form with ``form = "long"`` (what Debian's in.fingerd answers);
- an empty query, when ``[server] list_users = true``, lists the logged-in users in the short
  form (``finger``), or the long form for ``/W`` (``finger -l``).

Who is shown: accounts from the passwd database (NSS: files, LDAP, ...) whose UID lies in the
range, and who have no ``~/.nofinger``. Others, root and system accounts by default, are not
known to this backend. Names are looked up exactly (case-sensitive, no real-name matching).
A user whose home directory the service cannot search (mode 0700, what Debian's adduser
creates since bookworm) might have a ``~/.nofinger`` that cannot be seen, so is not shown
either, unless ``show_private_homes = true``.

What is shown of a shown user (RFC 1288 §3.2.3): ``local_fields`` to askers on this host or
``local_networks`` (fingerd/networks.py), ``fields`` to everybody else, including an asker the
front end cannot vouch for (``query.remote`` empty), less what the user's ``~/.fingerrc``
hides (fingerd/fingerrc.py). Only what is shown is read.

Files are read as the service user: a ``~/.plan`` that it cannot read is not shown. Like
bsd-finger, the dot files are shown only if they are regular files (not symlinks), and at most
``max_file_bytes`` of each. Control characters in them become ``^X``, as finger prints them.

Per-connection cost: ``pwd`` and ``_struct`` are built in; nothing else is imported but
fingerd's own modules, and fingerrc.py, networks.py and _read.py only when they are needed.
"""

import os
import stat
import time

from fingerd import log
from fingerd.backend import Backend
from fingerd.bsdfinger import FIELDS, Person, Session, add_last_login, long_form, short_form
from fingerd.protocol import is_loopback
from fingerd.utmp import Login, read_lastlog, read_utmp, read_wtmp_last

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pwd

    from fingerd.config import Options
    from fingerd.networks import Network
    from fingerd.protocol import Query

LOGIN_DEFS = "/etc/login.defs"
DEFAULT_UID_MIN, DEFAULT_UID_MAX = 1000, 60000  # login.defs(5) defaults
UTMP = "/run/utmp"  # glibc's _PATH_UTMP is /var/run/utmp, a symlink to /run on Debian
WTMP = "/var/log/wtmp"
LASTLOG = "/var/log/lastlog"
MAIL_DIR = "/var/mail"
DEV_DIR = "/dev"
FINGERRC = ".fingerrc"  # fingerd/fingerrc.py, imported only for a user who has one

# What askers outside this host (and its local_networks) see by default: not where a user
# logs in from, not the paths of their account, not their mail.
REMOTE_FIELDS = tuple(f for f in FIELDS if f not in ("from-host", "directory", "shell", "mail"))

_TALKABLE = 0o220  # a terminal is writable (mesg y) when group and owner may write
_MAX_NAME = 32  # UT_NAMESIZE
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


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


def tty_state(session: "Session", dev_dir: str, now: int) -> None:
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
    session.idle = max(0, now - int(st.st_atime))
    session.writable = st.st_mode & _TALKABLE == _TALKABLE


def show_file(path: str, limit: int) -> str | None:
    """A dot file's content if it is a readable regular file (bsd-finger's show_text)."""
    from fingerd.backends._read import read_capped  # the long form only

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


class LocalBackend(Backend):
    """Accounts of this host, in the format of Debian's finger."""

    blocking = True  # reads utmp, lastlog, home directories

    def __init__(self, options: "Options") -> None:
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
        self.fields = field_set(options, "fields", REMOTE_FIELDS)
        self.local_fields = field_set(options, "local_fields", FIELDS)
        self.local_networks: tuple[Network, ...] = ()
        if options.string_list("local_networks", []):
            from fingerd.networks import from_options  # only when some are configured

            self.local_networks = from_options(options, "local_networks")
        self.utmp = options.string("utmp", UTMP)
        self.wtmp = options.string("wtmp", WTMP)
        self.lastlog = options.string("lastlog", LASTLOG)
        self.mail_dir = options.string("mail_dir", MAIL_DIR)
        self.dev_dir = DEV_DIR

    # -- the contract -----------------------------------------------------------------------

    def lookup(self, query: "Query") -> str | None:
        account = self._account(query.user)
        if account is None:
            return None
        now = int(time.time())
        person = self._person(*account, self._is_local(query.remote))
        for login in self._logins():
            if login.user == person.name:
                self._add_session(person, login, now)
        self._add_last_login(person, account[0].pw_uid)
        if query.verbose or self.long_by_default:
            self._add_long_data(person)
            return long_form([person], now)
        return short_form([person], now)

    def list_users(self, query: "Query") -> str | None:
        now = int(time.time())
        local = self._is_local(query.remote)
        people: dict[str, tuple[Person, int] | None] = {}
        for login in self._logins():
            if login.user not in people:
                account = self._account(login.user)
                people[login.user] = None if account is None else (
                    self._person(*account, local), account[0].pw_uid)
            entry = people[login.user]
            if entry is not None:
                self._add_session(entry[0], login, now)
        shown = [entry for entry in people.values() if entry is not None]
        if not shown:
            return "No one logged on."
        if query.verbose:
            for person, uid in shown:
                self._add_last_login(person, uid)
                self._add_long_data(person)
            return long_form([person for person, _ in shown], now)
        return short_form(sorted((person for person, _ in shown), key=lambda p: p.name), now)

    def probe(self) -> list[str]:
        """`fingerd check`: logins that cannot be read, users hidden by a private home."""
        import pwd

        problems = []
        if os.path.exists(self.utmp) and not os.access(self.utmp, os.R_OK):
            problems.append(f"{self.utmp} cannot be read: logged-in users are not shown")
        if not self.show_private_homes:
            hidden = [pw.pw_name for pw in pwd.getpwall()[:100000]
                      if self.uid_min <= pw.pw_uid <= self.uid_max
                      and os.path.isdir(pw.pw_dir) and not os.access(pw.pw_dir, os.X_OK)]
            if hidden:
                problems.append(f"{len(hidden)} user(s) not shown, their home cannot be entered "
                                f"by the service: {', '.join(hidden[:5])}"
                                f"{', ...' if len(hidden) > 5 else ''} (chmod o+x ~, or "
                                "show_private_homes = true)")
        return problems

    # -- who is shown, and what of them -----------------------------------------------------

    def _account(self, name: str) -> "tuple[pwd.struct_passwd, bool] | None":
        """The passwd entry for ``name`` if this backend may show it, and whether its home is
        private (cannot be searched); None if it may not be shown."""
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
            return pw, False  # no ~/.nofinger (or no home at all: nothing to opt out with)
        except OSError:
            # The home directory cannot be searched (0700, Debian's default since bookworm):
            # whether the user opted out cannot be seen, so by default they are not shown.
            return (pw, True) if self.show_private_homes else None
        return None  # ~/.nofinger: the user asked not to be shown

    def _is_local(self, remote: str) -> bool:
        """Is the asker on this host, or on one of ``local_networks``?"""
        if is_loopback(remote):
            return True
        if not self.local_networks:
            return False
        from fingerd.networks import is_local

        return is_local(remote, self.local_networks)

    def _person(self, pw: "pwd.struct_passwd", private: bool, local: bool) -> "Person":
        """The account, with the fields shown to this asker: the admin's for local or remote
        askers, less what the user's ~/.fingerrc hides."""
        person = Person(pw.pw_name, pw.pw_gecos, pw.pw_dir, pw.pw_shell)
        shown = self.local_fields if local else self.fields
        # A private home hides ~/.fingerrc too: then the admin's fields apply.
        if not private and _exists(f"{pw.pw_dir}/{FINGERRC}"):
            from fingerd import fingerrc

            hidden = fingerrc.read(pw.pw_dir, pw.pw_uid, FIELDS)
            for problem in hidden.problems:
                log.warning(f"{pw.pw_dir}/{FINGERRC}: {problem}")
            shown = shown - hidden.fields(local)
        person.shown = shown
        return person

    # -- what finger would find (only what is shown) ----------------------------------------

    def _logins(self) -> "list[Login]":
        try:
            return read_utmp(self.utmp)
        except OSError as e:
            log.warning(f"{self.utmp}: {e.strerror}; logged-in users are not shown")
            return []

    def _add_session(self, person: "Person", login: "Login", now: int) -> None:
        session = Session(login.line, login.host, login.time)
        if "on-since" in person.shown:
            tty_state(session, self.dev_dir, now)
        person.sessions.append(session)

    def _add_last_login(self, person: "Person", uid: int) -> None:
        """The last login from lastlog, else from wtmp (lastlog is gone from newer Debian)."""
        if "last-login" not in person.shown:
            return
        last = read_lastlog(self.lastlog, uid)
        if last is None and self.wtmp:
            last = read_wtmp_last(self.wtmp, person.name)
        add_last_login(person, None if last is None else
                       Session(last.line, last.host, last.time, live=False))

    def _add_long_data(self, person: "Person") -> None:
        """What only the long form shows: the mail status and the dot files."""
        shown = person.shown
        if "mail" in shown:
            try:
                st = os.stat(f"{self.mail_dir}/{person.name}")
            except OSError:
                pass
            else:
                if st.st_size:
                    person.mail_received, person.mail_read = int(st.st_mtime), int(st.st_atime)
        limit = self.max_file_bytes
        if "pgpkey" in shown:
            person.pgpkey = show_file(f"{person.dir}/.pgpkey", limit)
        if "project" in shown:
            person.project = show_file(f"{person.dir}/.project", limit)
        if "plan" in shown:
            person.plan = show_file(f"{person.dir}/.plan", limit)


def field_set(options: "Options", key: str, default: tuple[str, ...]) -> frozenset[str]:
    """A list of field names (fingerd/bsdfinger.py's FIELDS); an unknown one is an error
    naming the file, the line and the field most like it."""
    names = options.string_list(key, list(default))
    for name in names:
        if name not in FIELDS:
            import difflib  # the error path only

            close = difflib.get_close_matches(name, FIELDS, 1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise options.error(key, f"unknown field {name!r}{hint} "
                                f"(fields: {', '.join(FIELDS)})")
    return frozenset(names)


def _exists(path: str) -> bool:
    """False only when ``path`` is certainly not there; any other answer is left to the
    reader, which reports it."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        pass
    return True
