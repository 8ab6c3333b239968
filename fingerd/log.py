"""Logging: one structured record per query, to the journal when it is there, else stderr.

Never stdout: in the per-connection handler stdout is the client's socket. The standard
``logging`` package is not used because every connection would pay for importing it.

When stderr is connected to the journal (systemd sets ``$JOURNAL_STREAM`` to its device and
inode) and python-systemd is importable, records go out as native journal fields, which
``journalctl FINGER_OUTCOME=denied`` and friends can select on. Otherwise one ``key=value`` line
per record goes to stderr.
"""

from __future__ import annotations

import os
import sys

# Priorities, as syslog(3) numbers them.
ERR, WARNING, INFO = 3, 4, 6

_sendv: object = None  # systemd's sd_journal_sendv, once found; False when not to be used


def _journal_sendv() -> object:
    global _sendv
    if _sendv is None:
        _sendv = False
        stream = os.environ.get("JOURNAL_STREAM", "")
        try:
            st = os.fstat(2)
            if stream == f"{st.st_dev}:{st.st_ino}":
                # The C function behind systemd.journal.send(); importing systemd.journal
                # itself would drag in `logging`, `uuid` and `traceback`.
                try:
                    from systemd._journal import sendv
                except ImportError:
                    from systemd.journal import sendv
                _sendv = sendv
        except (OSError, ImportError):
            pass
    return _sendv


def send(message: str, priority: int = INFO, **fields: object) -> None:
    """Write one record. Field names are journal fields (upper case); values are made text."""
    sendv = _journal_sendv()
    if sendv:
        args = [f"MESSAGE={message}", f"PRIORITY={priority}", "SYSLOG_IDENTIFIER=fingerd"]
        args += [f"{key}={value}" for key, value in fields.items() if value is not None]
        try:
            sendv(*args)  # type: ignore[operator]
            return
        except OSError:
            pass  # the journal went away: fall back to the plain line
    line = message.replace("\n", " ")
    try:
        sys.stderr.write(f"fingerd: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # nowhere left to report to; the client must still get its answer


def warning(message: str, **fields: object) -> None:
    send(message, WARNING, **fields)


def error(message: str, **fields: object) -> None:
    send(message, ERR, **fields)


def printable(text: str) -> str:
    """Client-supplied text as it may be logged: escaped where not printable, at most 200 chars."""
    text = text[:200].replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def query_record(remote: str, query: str, user: str | None, backend: str, outcome: str,
                 duration: float) -> None:
    """The one record per query."""
    ms = f"{duration * 1000:.1f}"
    query = printable(query)
    message = (f'remote={remote or "-"} query="{query}" backend={backend or "-"} '
               f"outcome={outcome.replace(' ', '_')} duration_ms={ms}")
    send(message, INFO, REMOTE_ADDR=remote or None, FINGER_QUERY=query,
         FINGER_USER=user, FINGER_BACKEND=backend or None, FINGER_OUTCOME=outcome,
         FINGER_DURATION_MS=ms)
