"""``~/.fingerrc``: a user's own say in what the ``local`` backend shows about them.

::

    # ~/.fingerrc: what fingerd leaves out about me
    hide = from-host, plan       # from everybody
    hide-remote = on-since       # from askers outside this host and its local networks

Field names are those of fingerd/bsdfinger.py's FIELDS (``all`` is every one of them),
separated by commas or blanks; ``#`` starts a comment. A user can only take fields away from
what the admin's ``fields`` and ``local_fields`` allow, never add any.

The file is read as the service user, so the home directory must be searchable and the file
readable by others. It is read safely: not through a symlink, only a regular file, owned by
the user, at most MAX_BYTES. Mistakes never fail the lookup; they are reported to the caller
(who logs them), and the reading is the strictest one: a line that is not understood hides
every field it names, from everybody; a file that cannot be used at all (unreadable, not a
regular file, a symlink, someone else's, too large) leaves only the login shown.
"""

import os
import stat

NAME = ".fingerrc"
MAX_BYTES = 4096
KEYS = ("hide", "hide-remote")


class Hidden:
    """What a user hides: from everybody (``everywhere``), and from remote askers too
    (``remote``); ``problems`` are the mistakes found, to be logged."""

    __slots__ = ("everywhere", "problems", "remote")

    def __init__(self, everywhere: frozenset[str] = frozenset(),
                 remote: frozenset[str] = frozenset(), problems: tuple[str, ...] = ()) -> None:
        self.everywhere, self.remote, self.problems = everywhere, remote, problems

    def fields(self, local: bool) -> frozenset[str]:
        """The fields hidden from a local (or a remote) asker."""
        return self.everywhere if local else self.everywhere | self.remote


def parse(text: str, fields: tuple[str, ...]) -> "Hidden":
    """The ``hide`` and ``hide-remote`` lines of ``text``, with ``fields`` the known names."""
    known = frozenset(fields)
    hidden: dict[str, set[str]] = {"hide": set(), "hide-remote": set()}
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or key not in KEYS:
            # Not understood: whatever fields it names are hidden from everybody.
            named = {word for word in line.replace("=", " ").replace(",", " ").split()
                     if word in known}
            hidden["hide"] |= named
            problems.append(f"line {number}: expected 'hide = FIELD, ...' or "
                            f"'hide-remote = FIELD, ...'"
                            + (f"; hiding {', '.join(sorted(named))}" if named else ""))
            continue
        for name in value.replace(",", " ").split():
            if name == "all":
                hidden[key] |= known
            elif name in known:
                hidden[key].add(name)
            else:
                problems.append(f"line {number}: unknown field {name[:40]!r} "
                                f"(fields: {', '.join(fields)}, all)")
    return Hidden(frozenset(hidden["hide"]), frozenset(hidden["hide-remote"]), tuple(problems))


def read(home: str, uid: int, fields: tuple[str, ...]) -> "Hidden":
    """What ``~/.fingerrc`` in ``home`` hides, for the account ``uid``; nothing if there is
    no such file."""
    if not home.startswith("/"):
        return Hidden()  # no home directory (an empty passwd field): no file of theirs
    strict = frozenset(fields) - {"login"}
    try:
        # O_NOFOLLOW: not a symlink to some other file; O_NONBLOCK: a FIFO does not hang.
        fd = os.open(f"{home}/{NAME}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return Hidden()
    except OSError as e:
        return Hidden(strict, problems=(f"cannot be read ({e.strerror}); showing the login "
                                        "only",))
    from fingerd.backends._read import read_capped

    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Hidden(strict, problems=("not a regular file; showing the login only",))
        if st.st_uid != uid:
            return Hidden(strict, problems=(f"owned by UID {st.st_uid}, not by its user; "
                                            "showing the login only",))
        data, more = read_capped(fd, MAX_BYTES)
    except OSError as e:
        return Hidden(strict, problems=(f"cannot be read ({e.strerror}); showing the login "
                                        "only",))
    finally:
        os.close(fd)
    if more:
        return Hidden(strict, problems=(f"larger than {MAX_BYTES} bytes; showing the login "
                                        "only",))
    return parse(data.decode("utf-8", "replace"), fields)
