"""Login records written the way login(1) and sshd write them: through glibc itself
(utmpname/pututline, updwtmp), with ctypes, so that the tests never rely on fingerd's own idea of
the record layout. lastlog(8)'s file is written by hand: glibc has no function for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class ExitStatus(ctypes.Structure):
    _fields_ = [("e_termination", ctypes.c_short), ("e_exit", ctypes.c_short)]


class TimeVal32(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int32), ("tv_usec", ctypes.c_int32)]


class Utmp(ctypes.Structure):
    """struct utmp, <bits/utmp.h> (Linux, 64-bit with 32-bit time compatibility)."""

    _fields_ = [("ut_type", ctypes.c_short), ("ut_pid", ctypes.c_int),
                ("ut_line", ctypes.c_char * 32), ("ut_id", ctypes.c_char * 4),
                ("ut_user", ctypes.c_char * 32), ("ut_host", ctypes.c_char * 256),
                ("ut_exit", ExitStatus), ("ut_session", ctypes.c_int32),
                ("ut_tv", TimeVal32), ("ut_addr_v6", ctypes.c_int32 * 4),
                ("unused", ctypes.c_char * 20)]


class LastLog(ctypes.Structure):
    """struct lastlog, <bits/utmp.h>."""

    _fields_ = [("ll_time", ctypes.c_int32), ("ll_line", ctypes.c_char * 32),
                ("ll_host", ctypes.c_char * 256)]


USER_PROCESS, DEAD_PROCESS, LOGIN_PROCESS = 7, 8, 6


def utmp_entry(user: str, line: str, when: int, host: str = "",
               kind: int = USER_PROCESS) -> Utmp:
    entry = Utmp()
    entry.ut_type = kind
    entry.ut_pid = 4242
    entry.ut_line = line.encode()
    entry.ut_id = line.encode()[-4:]
    entry.ut_user = user.encode()
    entry.ut_host = host.encode()
    entry.ut_tv.tv_sec = when
    return entry


def write_utmp(path: Path, entries: list[Utmp]) -> None:
    """Write utmp records with glibc's utmpname()/pututline(), as login(1) does."""
    assert ctypes.sizeof(Utmp) == 384
    path.touch()
    assert libc.utmpname(str(path).encode()) == 0
    libc.setutent()
    for entry in entries:
        assert libc.pututline(ctypes.byref(entry)), os.strerror(ctypes.get_errno())
    libc.endutent()
    libc.utmpname(b"/var/run/utmp")


def write_wtmp(path: Path, entries: list[Utmp]) -> None:
    """Append records with glibc's updwtmp(), as login(1) does for wtmp."""
    path.touch()  # updwtmp() does not create the file
    for entry in entries:
        libc.updwtmp(str(path).encode(), ctypes.byref(entry))
    assert path.stat().st_size == len(entries) * ctypes.sizeof(Utmp)


def write_lastlog(path: Path, records: dict[int, tuple[int, str, str]]) -> None:
    """lastlog(8)'s file: one struct lastlog per UID, at offset uid * 292."""
    assert ctypes.sizeof(LastLog) == 292
    with path.open("r+b" if path.exists() else "w+b") as f:
        for uid, (when, line, host) in records.items():
            f.seek(uid * ctypes.sizeof(LastLog))
            f.write(bytes(LastLog(when, line.encode(), host.encode())))
