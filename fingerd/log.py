"""Logging: one structured record per query, to the journal when it is there, else stderr.

Never stdout: in the per-connection handler stdout is the client's socket. The standard
``logging`` package is not used because every connection would pay for importing it.

When stderr is connected to the journal (systemd sets ``$JOURNAL_STREAM`` to its device and
inode), records go out as native journal fields, which ``journalctl FINGER_OUTCOME=denied`` and
friends can select on. Otherwise one ``key=value`` line per record goes to stderr.

The native protocol (systemd.journal-fields(7), "Native Journal Protocol" in systemd's docs) is
one datagram of ``KEY=value`` lines to /run/systemd/journal/socket, which is what
``sd_journal_sendv(3)`` sends. It is written here with the built-in ``_socket`` module: loading
python-systemd's ``systemd._journal`` costs each connection about 1 ms of CPU and 0.9 MiB of RSS
(it maps libsystemd), the datagram code about 0.1 ms.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections import deque

# Priorities, as syslog(3) numbers them.
ERR, WARNING, INFO = 3, 4, 6

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# The datagram socket to the journal once found; False when records go to stderr instead.
_journal: "_socket.socket | bool | None" = None


def _journal_socket() -> "_socket.socket | bool":
    global _journal
    if _journal is None:
        _journal = False
        stream = os.environ.get("JOURNAL_STREAM", "")
        try:
            st = os.fstat(2)
            if stream == f"{st.st_dev}:{st.st_ino}":
                # Built into Debian's interpreter; `socket` would import `enum` and more.
                import _socket

                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
                try:  # noqa: SIM105 (contextlib costs 3 ms to import; this runs per connection)
                    sock.connect(JOURNAL_SOCKET)
                except OSError:
                    pass  # not there (yet): send() below tries again
                _journal = sock
        except OSError:
            pass
    return _journal


def _record(message: str, priority: int, fields: dict[str, object]) -> bytes:
    """One journal entry. Values are nearly always one line each, which is one string to
    encode; a value with a newline in it takes the binary form (``fingerd serve`` sends one
    entry per query, so this is on its hot path)."""
    lines = [f"{key}={value}\n" for key, value in fields.items() if value is not None]
    text = f"MESSAGE={message}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=fingerd\n{''.join(lines)}"
    if text.count("\n") == len(lines) + 3:
        return text.encode("utf-8", "replace")
    return b"".join([_field("MESSAGE", message), b"PRIORITY=%d\n" % priority,
                     b"SYSLOG_IDENTIFIER=fingerd\n",
                     *[_field(key, value) for key, value in fields.items() if value is not None]])


def _field(key: str, value: object) -> bytes:
    """One field in the native protocol: ``KEY=value``, or the length-prefixed binary form for
    a value with a newline in it."""
    data = str(value).encode("utf-8", "replace")
    if b"\n" not in data:
        return b"%s=%s\n" % (key.encode("ascii"), data)
    return b"%s\n%s%s\n" % (key.encode("ascii"), len(data).to_bytes(8, "little"), data)


# When a deque, journal records wait in it for flush() instead of going out one by one.
_batch: "deque[bytes] | None" = None


def batch() -> None:
    """Hold journal records until :func:`flush` (``fingerd serve`` calls it once per turn of its
    event loop). Each datagram that finds journald asleep wakes it up, which costs the sender a
    cross-CPU wake-up; records sent back to back wake it once."""
    global _batch
    if _batch is None:
        from collections import deque

        _batch = deque()


def flush() -> None:
    """Send the records held since the last flush, in order (worker threads may add more)."""
    sock = _journal  # a socket: records are held only for one (see _send)
    while _batch:
        data = _batch.popleft()
        try:
            sock.send(data)  # type: ignore[union-attr]
        except OSError:
            _send_journal(data)  # journald restarted: address it anew, or salvage the message


def send(message: str, priority: int = INFO, **fields: object) -> None:
    """Write one record. Field names are journal fields (upper case); values are made text.

    The message may quote what others control (a web server's status line, a file's name):
    control characters other than newlines are escaped here, for every caller, so that none
    reaches a terminal running journalctl or reading stderr.
    """
    _send(message, priority, fields)


def _send(message: str, priority: int, fields: "dict[str, object]") -> None:
    if not message.isprintable():
        message = escape(message, keep="\n")
    sock = _journal_socket()
    if sock:
        data = _record(message, priority, fields)
        if _batch is not None:
            _batch.append(data)
            return
        if _send_journal(data):
            return
    _send_line(message)


def _send_journal(data: bytes) -> bool:
    sock = _journal_socket()
    if sock:
        try:
            sock.send(data)  # type: ignore[union-attr]
            return True
        except OSError:
            # journald restarted (or was not there yet): address it anew, once. Connected, a
            # record costs half the CPU of sendto(), which looks the path up every time.
            try:
                sock.connect(JOURNAL_SOCKET)  # type: ignore[union-attr]
                sock.send(data)  # type: ignore[union-attr]
                return True
            except OSError:
                pass
    if _batch is not None:  # too late to fall back to the plain line: salvage the message
        message = data.partition(b"\n")[0].partition(b"=")[2].decode("utf-8", "replace")
        _send_line(message or "(a journal record could not be sent)")
    return False


def _send_line(message: str) -> None:
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
    text = text[:200]
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text  # the usual case, and fingerd serve logs every query
    return escape(text.replace("\\", "\\\\").replace('"', '\\"'))


def escape(text: str, keep: str = "") -> str:
    """Every character that is not printable (nor in ``keep``) as Python writes it in a
    string: ``\\x1b``, ``\\u202e``, ``\\U0001f600`` (never ambiguous: ``\\x202e`` would read as
    ``\\x20`` followed by ``2e``). For anything that goes to a terminal or the journal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def query_record(remote: str, query: str, user: str | None, backend: str, outcome: str,
                 duration: float, frontend: str | None = None, **fields: object) -> None:
    """The one record per query. ``frontend``: which front end asked, when not finger
    itself (``web``, ``webfinger``, ``irc``); ``remote`` is then whatever identifies the asker
    there (an IRC nick!user@host). ``fields``: more journal fields of that front end's own
    (``IRC_CHANNEL``); None leaves one out."""
    ms = f"{duration * 1000:.1f}"
    query = printable(query)
    via = f" frontend={frontend}" if frontend else ""
    if fields:
        via += "".join(f" {key.lower()}={printable(str(value))}"
                       for key, value in fields.items() if value is not None)
    message = (f'remote={printable(remote) or "-"} query="{query}" backend={backend or "-"} '
               f"outcome={outcome.replace(' ', '_')} duration_ms={ms}{via}")
    record: dict[str, object] = {
        "REMOTE_ADDR": remote or None, "FINGER_QUERY": query, "FINGER_USER": user,
        "FINGER_BACKEND": backend or None, "FINGER_OUTCOME": outcome, "FINGER_DURATION_MS": ms,
        "FINGER_FRONTEND": frontend}
    if fields:
        record.update(fields)
    _send(message, INFO, record)
