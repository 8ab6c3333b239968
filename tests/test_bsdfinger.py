"""fingerd/bsdfinger.py, the pure formatter, against what Debian's ``finger`` printed.

tests/data/bsdfinger/host.json describes a host (accounts, GECOS fields, dot files, login
sessions with their terminals' idle times and ``mesg`` state, lastlog records, mail spools,
and the frozen time ``now``); tests/capture_finger.py staged that host and ran the real
``finger -l``/``finger -s``/``finger`` on it, and its output is committed next to it. Here the
same data, given to the formatter as :class:`Person` values, must give the same bytes. As root
(CI), the capture is run again, to check that the committed files are what finger prints today.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from capture_finger import DATA, capture, load_host
from conftest import IS_ROOT, require

from fingerd.bsdfinger import (
    ALL,
    FIELDS,
    Person,
    Session,
    _entries,
    add_last_login,
    long_form,
    long_idle,
    prphone,
    short_form,
    short_idle,
    visible,
)

HOST = load_host()
NOW = int(HOST["now"])  # type: ignore[call-overload]
ACCOUNTS: dict[str, dict[str, object]] = {
    str(a["name"]): a for a in HOST["accounts"]}  # type: ignore[attr-defined]
LOGGED_IN = list(dict.fromkeys(str(u["user"]) for u in HOST["utmp"]))  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def host_time_zone() -> Iterator[None]:
    """The host's time zone (UTC) for the formatter, as finger had it; restored after."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = str(HOST["tz"])
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def live_sessions(name: str) -> list[Session]:
    """The user's utmp sessions, with what finger reads from each terminal."""
    sessions = []
    for u in HOST["utmp"]:  # type: ignore[attr-defined]
        if u["user"] == name:
            tty = HOST["ttys"][u["line"]]  # type: ignore[index]
            sessions.append(Session(u["line"], u["host"], NOW - u["ago"],
                                    idle=max(0, tty["idle"]),  # an atime ahead: not idle
                                    writable=int(tty["mode"], 8) & 0o020 != 0))
    return sessions


def person(name: str, long: bool = True, last_login: bool = True) -> Person:
    """``name`` as finger finds it on the host: passwd, sessions, last login, mail, files."""
    account = ACCOUNTS[name]
    p = Person(name, str(account["gecos"]), f"/home/{name}", str(account["shell"]))
    p.sessions = live_sessions(name)
    if last_login:
        last = next((Session(r["line"], r["host"], NOW - r["ago"], live=False)
                     for r in HOST["lastlog"]  # type: ignore[attr-defined]
                     if r["uid"] == account["uid"]), None)
        add_last_login(p, last)
    if long:
        mail = HOST["mail"].get(name)  # type: ignore[attr-defined]
        if mail and not mail.get("empty"):
            p.mail_received, p.mail_read = NOW - mail["received_ago"], NOW - mail["read_ago"]
        files: dict[str, str] = account["files"]  # type: ignore[assignment]
        p.pgpkey, p.project, p.plan = (files.get(".pgpkey"), files.get(".project"),
                                       files.get(".plan"))
    return p


def captured(name: str) -> str:
    text = (DATA / name).read_bytes().decode("utf-8")
    assert text, f"{name} is empty: the capture did not work"
    return text


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_long_form_is_finger_l(name: str) -> None:
    """``long_form`` of one account is, byte for byte, what ``finger -l`` printed."""
    expected = captured(f"finger-l-{name}.txt")
    assert expected.startswith(f"Login: {name}")
    assert long_form([person(name)], NOW) == expected


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_short_form_is_finger_s(name: str) -> None:
    """``short_form`` of one account is, byte for byte, what ``finger -s`` printed."""
    expected = captured(f"finger-s-{name}.txt")
    assert expected.startswith("Login ")
    assert short_form([person(name, long=False)], NOW) == expected


def test_listing_is_finger() -> None:
    """The short listing of the logged-in users, by name, is what ``finger`` printed (live
    sessions only, no last login)."""
    people = [person(name, long=False, last_login=False) for name in sorted(LOGGED_IN)]
    assert len(people) > 3
    assert short_form(people, NOW) == captured("finger.txt")


def test_long_listing_is_finger_l() -> None:
    """The long listing, in utmp order with an empty line between people, is what
    ``finger -l`` printed."""
    people = [person(name) for name in LOGGED_IN]
    assert long_form(people, NOW) == captured("finger-l.txt")


@pytest.mark.netns
def test_captures_are_what_finger_prints_today(tmp_path: Path) -> None:
    """Running the capture again gives the committed files, byte for byte: the test data is
    real finger output for host.json, not edited by hand."""
    require(IS_ROOT, "the capture needs root (a mount namespace)")
    for tool in ("finger", "faketime", "unshare"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    written = capture(tmp_path)
    committed = sorted(p.name for p in DATA.glob("finger*.txt"))
    assert [p.name for p in written] == committed
    for path in written:
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name


# -- fields left out (RFC 1288 §3.2.3) -----------------------------------------------------------

# field: (account, a text that only that field puts in the account's long form)
FIELD_TEXT = {
    "login": ("alice", "Login: alice"), "name": ("alice", "Alice Liddell"),
    "office": ("alice", "Room 5"), "phone": ("alice", "555-1234"),
    "directory": ("alice", "Directory: /home/alice"), "shell": ("alice", "Shell: /bin/bash"),
    "on-since": ("alice", "On since"), "from-host": ("alice", "remote.example"),
    "last-login": ("bob", "Last login"), "mail": ("alice", "New mail received"),
    "pgpkey": ("bob", "PGP key:"), "project": ("alice", "Project:"), "plan": ("alice", "Plan:")}
NEEDS = {"from-host": "on-since"}  # alice's remote.example is on a live session's line


@pytest.mark.parametrize("field", FIELDS)
def test_a_field_left_out_of_the_long_form(field: str) -> None:
    """Without one field its text is gone from the long form and every other field's text
    is still there (but what shows only with it)."""
    assert set(FIELD_TEXT) == ALL
    name, text = FIELD_TEXT[field]
    full = person(name)
    assert text in long_form([full], NOW)
    narrowed = person(name)
    narrowed.shown = ALL - {field}
    answer = long_form([narrowed], NOW)
    assert text not in answer, answer
    for other, (who, other_text) in FIELD_TEXT.items():
        if who == name and other != field and NEEDS.get(other) != field:
            assert other_text in answer, (other, answer)


def test_lines_with_one_half_and_none() -> None:
    """lprint()'s two-field lines keep the half that is shown and go when both are not;
    with no field at all the long form is empty."""
    p = person("alice")
    p.shown = frozenset({"login", "shell"})
    assert long_form([p], NOW) == "Login: alice\nShell: /bin/bash\n"
    p.shown = frozenset({"name", "directory"})
    assert long_form([p], NOW) == "Name: Alice Liddell\nDirectory: /home/alice\n"
    p.shown = frozenset()
    assert long_form([p], NOW) == ""


def test_without_on_since_the_last_login_is_shown_as_if_logged_out() -> None:
    """Without on-since, a logged-in user's last login is shown (it always is when nobody is
    logged in), so being logged in cannot be told from its absence; the short form has one
    row for it, not one per session."""
    p = person("alice")
    p.shown = ALL - {"on-since"}
    answer = long_form([p], NOW)
    assert "On since" not in answer and "pts/5" not in answer
    assert "\nLast login Tue Jan 13 12:00 (UTC) on pts/1 from old.example\n" in answer
    short = short_form([person("alice", long=False)], NOW).splitlines()
    p = person("alice", long=False)
    p.shown = ALL - {"on-since"}
    assert len(short) == 3
    assert short_form([p], NOW).splitlines() == [
        short[0], "alice     Alice Liddell   pts/1       *  Jan 13 12:00 (old.example)"]


def test_short_form_row_without_session_columns() -> None:
    """A short-form row with neither on-since nor last-login keeps its columns: blanks
    where the session was, then the office and phone."""
    p = person("alice", long=False)
    p.shown = ALL - {"on-since", "last-login"}
    rows = short_form([p], NOW).splitlines()
    assert rows[1] == f"alice     Alice Liddell  {' ' * 28} Room 5     555-1234"
    assert rows[0].index("Office") == rows[1].index("Room 5")


def test_from_host_left_out_of_the_short_form() -> None:
    """Without from-host the short form shows the office and phone where the host was."""
    p = person("alice", long=False)
    p.shown = ALL - {"from-host"}
    answer = short_form([p], NOW)
    assert "remote.example" not in answer
    assert answer.count("Room 5     555-1234") == 2


# -- the pieces, where the captures do not reach every branch ---------------------------------

@pytest.mark.parametrize("seconds,text", [
    (0, ""), (1, "1 second idle"), (59, "59 seconds idle"), (60, "1 minute idle"),
    (330, "5 minutes 30 seconds idle"), (3600, "1 hour idle"),
    (3 * 3600 + 2 * 60 + 30, "3 hours 2 minutes idle"), (86400, "1 day idle"),
    (2 * 86400 + 3600 + 1800, "2 days 1 hour idle"), (366 * 86400, "1 day idle")])
def test_long_idle(seconds: int, text: str) -> None:
    """lprint()'s idle time: seconds only below an hour, minutes only below a day, and
    days wrap after a year as gmtime()'s tm_yday does."""
    assert long_idle(seconds) == text


@pytest.mark.parametrize("seconds,text", [
    (0, "     "), (59, "     "), (60, "    1"), (3599, "   59"), (3600, " 1:00"),
    (10 * 3600 + 5 * 60, "10:05"), (86400, "   1d"), (400 * 86400, "  35d")])
def test_short_idle(seconds: int, text: str) -> None:
    """stimeprint(): five columns of minutes, hours:minutes or days."""
    assert short_idle(seconds) == text


@pytest.mark.parametrize("raw,shown", [
    ("5551234", "555-1234"), ("2025550100", "202-555-0100"), ("15551234567", "+1-555-123-4567"),
    ("12345", "x1-2345"), ("4242", "x4242"), ("x4242", "x4242"), ("123", "123"),
    ("555 1234", "555 1234"), ("\u0661\u0662\u0663\u0664", "\u0661\u0662\u0663\u0664")])
def test_prphone(raw: str, shown: str) -> None:
    """Phone numbers of 4, 5, 7, 10 or 11 ASCII digits are punctuated; others are as given."""
    assert prphone(raw) == shown


def test_control_characters_become_carets() -> None:
    """Control characters are shown as ^X, DEL as ^?; tabs and newlines stay."""
    assert visible("a\x1b[1mb\x07\x7f\tc\n") == "a^[[1mb^G^?\tc\n"


def test_messages_off_after_an_idle_time_goes_on_its_own_line() -> None:
    """"(messages off)" follows the session on the same line when the terminal is not idle,
    and goes on a line of its own after an idle time."""
    p = Person("u", "U", "/home/u", "/bin/sh")
    p.sessions = [Session("pts/0", "", NOW - 100, idle=0, writable=False),
                  Session("pts/1", "", NOW - 100, idle=90, writable=False)]
    text = long_form([p], NOW)
    assert " on pts/0 (messages off)\n" in text
    assert " on pts/1   1 minute 30 seconds idle\n     (messages off)\n" in text


def test_last_login_is_shown_unless_it_is_a_current_session() -> None:
    """enter_lastlog(): "Never logged in." without sessions; the last login is left out when
    no current session is older than it, or it is on a current terminal."""
    p = Person("u", "", "/", "")
    add_last_login(p, None)
    assert long_form([p], NOW).endswith("\nNever logged in.\nNo mail.\nNo Plan.\n")

    def lines_shown(last: Session | None) -> list[str]:
        add_last_login(p, last)
        return [s.line for s in _entries(p)]

    p.sessions = [Session("pts/1", "", 1000)]
    assert lines_shown(Session("pts/2", "", 500, live=False)) == ["pts/1"]  # older
    assert lines_shown(None) == ["pts/1"]
    assert lines_shown(Session("pts/1", "", 2000, live=False)) == ["pts/1"]  # same terminal
    assert lines_shown(Session("pts/2", "", 2000, live=False)) == ["pts/1", "pts/2"]
