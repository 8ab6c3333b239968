"""fingerd/utmp.py: login records as glibc writes them (utmpname/pututline, updwtmp) and as
lastlog(8) lays them out, read back through the pure parsers and the bounded reads."""

from __future__ import annotations

from pathlib import Path

from login_records import (
    DEAD_PROCESS,
    LOGIN_PROCESS,
    utmp_entry,
    write_lastlog,
    write_utmp,
    write_wtmp,
)

from fingerd import utmp
from fingerd.utmp import Login


def test_utmp_user_processes_in_file_order(tmp_path: Path) -> None:
    """parse_utmp keeps the USER_PROCESS records with a user name, in file order, with the
    line, host and login time glibc wrote; dead and login records are dropped."""
    path = tmp_path / "utmp"
    write_utmp(path, [utmp_entry("alice", "pts/1", 1000, "far.example"),
                      utmp_entry("bob", "pts/2", 2000, kind=DEAD_PROCESS),
                      utmp_entry("LOGIN", "tty3", 3000, kind=LOGIN_PROCESS),
                      utmp_entry("carol", "pts/4", 4000)])
    data = path.read_bytes()
    assert len(data) == 4 * utmp.UTMP_SIZE
    expected = [Login("alice", "pts/1", "far.example", 1000), Login("carol", "pts/4", "", 4000)]
    assert utmp.parse_utmp(data) == expected
    assert utmp.read_utmp(str(path)) == expected
    assert utmp.parse_utmp(data + b"\x07" * 100) == expected  # a partial record: ignored


def test_missing_utmp_is_nobody_and_other_errors_raise(tmp_path: Path) -> None:
    """No utmp is nobody logged in; a utmp that cannot be read (a directory) is an error the
    caller logs."""
    assert utmp.read_utmp(str(tmp_path / "missing")) == []
    try:
        utmp.read_utmp(str(tmp_path))
    except OSError:
        pass
    else:
        raise AssertionError("reading a directory as utmp did not fail")


def test_fields_are_c_strings_decoded_leniently() -> None:
    """A field ends at its first NUL; bytes that are not UTF-8 become U+FFFD."""
    assert utmp.text(b"pts/1\0garbage") == "pts/1"
    assert utmp.text(b"caf\xe9\0") == "caf\ufffd"


def test_lastlog_by_uid(tmp_path: Path) -> None:
    """read_lastlog finds the record at uid * 292; a UID without one (time 0, or past the
    end of the file), and a missing file, are None."""
    path = tmp_path / "lastlog"
    write_lastlog(path, {5: (1234, "pts/7", "old.example"), 9: (0, "", "")})
    assert utmp.read_lastlog(str(path), 5) == Login("", "pts/7", "old.example", 1234)
    assert utmp.read_lastlog(str(path), 9) is None
    assert utmp.read_lastlog(str(path), 4) is None
    assert utmp.read_lastlog(str(path), 10**6) is None
    assert utmp.read_lastlog(str(tmp_path / "missing"), 5) is None
    assert utmp.parse_lastlog(b"short") is None


def test_wtmp_latest_login_searched_backwards(tmp_path: Path) -> None:
    """read_wtmp_last returns the user's latest USER_PROCESS record, across read chunks."""
    path = tmp_path / "wtmp"
    entries = [utmp_entry("alice", "pts/1", 100, "a.example")]
    entries += [utmp_entry("bob", f"pts/{i % 50}", 200 + i) for i in range(600)]  # > 1 chunk
    entries += [utmp_entry("alice", "pts/2", 5000, "b.example"),
                utmp_entry("", "pts/2", 6000, kind=DEAD_PROCESS)]
    write_wtmp(path, entries)
    assert utmp.read_wtmp_last(str(path), "alice") == Login("alice", "pts/2", "b.example", 5000)
    assert utmp.read_wtmp_last(str(path), "bob") == Login("bob", "pts/49", "", 799)
    assert utmp.read_wtmp_last(str(path), "carol") is None
    assert utmp.read_wtmp_last(str(tmp_path / "missing"), "alice") is None


def test_wtmp_scan_is_bounded(tmp_path: Path) -> None:
    """Only the last MAX_WTMP_SCAN bytes of wtmp are searched: a login before them is not
    found (a huge wtmp costs a bounded read)."""
    path = tmp_path / "wtmp"
    filler = utmp.MAX_WTMP_SCAN // utmp.UTMP_SIZE + 1
    with path.open("wb") as f:
        f.write(bytes(utmp_entry("alice", "pts/1", 100)))
        f.write(bytes(utmp_entry("bob", "pts/2", 200)) * filler)
    assert utmp.read_wtmp_last(str(path), "bob") is not None
    assert utmp.read_wtmp_last(str(path), "alice") is None
