"""``fingerd status``: users set, show and clear the status that ``finger user@host`` shows.

::

    fingerd status                      your status, when it was set and when it expires
    fingerd status set TEXT...          set it (TEXT "-": read it from standard input)
    fingerd status set --for 2h TEXT... ... and let it expire by itself (90s, 30m, 1d, 1h30m)
    fingerd status clear                remove it
    --user NAME                         someone else's (to show: anyone; to change: root)

No privileges are involved: the command connects to the status service's socket
(/run/fingerd/status.sock, fingerd-status.socket) and the kernel tells the service who
connected (``SO_PEERCRED``). Also ``fingerd status-server``, the service itself, which
fingerd-status.service runs (fingerd/status_server.py).

Exit status: 0 done (also "no status"), 1 refused or failed (the reason on stderr), 2 usage.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from fingerd.status_protocol import (
    BAD_REPLY,
    DEFAULT_SOCKET,
    ERR,
    MAX_SECONDS,
    MAX_TEXT_BYTES,
    MAX_TEXT_LINES,
    NONE,
    OK,
    STATUS,
    ProtocolError,
    Reply,
    check_text,
    format_clear,
    format_get,
    format_set,
    valid_user,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

TIMEOUT = 10.0  # the service may have to be started by its socket first
ENABLE_HINT = "an admin can turn it on with: systemctl enable --now fingerd-status.socket"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


class StatusError(Exception):
    """A failure to report on stderr, exit status 1."""


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``, ... as seconds (largest unit first, each
    at most once); raises ValueError with a message for people."""
    usage = (f"--for {text!r}: not a duration; use a number and a unit (s, m, h, d), largest "
             "first, e.g. 90s, 30m, 2h, 1d or 1h30m")
    total, rest, units = 0, text, list(_UNITS)
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if not digits or digits == len(rest) or digits > 9:
            raise ValueError(usage)
        while units and units[0][0] != rest[digits]:
            units.pop(0)
        if not units:
            raise ValueError(usage)
        total += int(rest[:digits]) * units.pop(0)[1]
        rest = rest[digits + 1:]
    if not total:
        raise ValueError(usage if not text else f"--for {text}: must be more than 0 seconds")
    if total > MAX_SECONDS:
        raise ValueError(f"--for {text}: at most {MAX_SECONDS // 86400}d")
    return total


def format_duration(seconds: float) -> str:
    """``1h59m``, ``45s``, ``3d2h``: the two largest units."""
    seconds = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in _UNITS:
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def shown(text: str) -> str:
    """Text as it may go to a terminal: control characters (escapes) as ``\\x1b``, and the
    like (fingerd.log.escape); line breaks stay."""
    from fingerd.log import escape

    return escape(text, keep="\n")


def when(timestamp: int) -> str:
    """A time in the caller's local time zone (TZ, /etc/localtime)."""
    return time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


def ask(path: str, request: bytes, timeout: float = TIMEOUT) -> Reply:
    """Send one request to the status service and read its reply (bounded)."""
    from fingerd.status_client import Unreachable, exchange

    try:
        return exchange(path, request, timeout)
    except Unreachable as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise StatusError(f"the status service is not running (nothing listens on {path});"
                              f" {ENABLE_HINT}") from None
        raise StatusError(f"cannot connect to the status service at {path}: "
                          f"{e.strerror or e}") from None
    except TimeoutError:
        raise StatusError(f"the status service did not answer within {timeout:g} s") from None
    except OSError as e:
        raise StatusError(f"the status service hung up: {e.strerror or e}") from None
    except ProtocolError as e:
        raise StatusError(f"unreadable reply from the status service ({e.message})") from None


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``status`` and ``status-server`` commands, for fingerd/cli.py."""
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--user", metavar="NAME", default=argparse.SUPPRESS,
                        help="whose status (default: yours); only root may change another's")
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"the status service's socket (default: {DEFAULT_SOCKET})")
    status = sub.add_parser(
        "status", parents=[common], help="show, set or clear your status (what finger shows)",
        description="Show your status (the text `finger you@host` answers, when the admin "
                    "configured the status backend), or set or clear it. Needs the status "
                    "service (fingerd-status.socket).")
    actions = status.add_subparsers(dest="action", metavar="ACTION")
    set_ = actions.add_parser(
        "set", parents=[common], help="set your status",
        description=f"Set your status: at most {MAX_TEXT_BYTES} bytes and "
                    f"{MAX_TEXT_LINES} lines.")
    set_.add_argument("--for", dest="duration", metavar="DURATION", default=None,
                      help="expire after this long: 90s, 30m, 2h, 1d, 1h30m (default: never)")
    set_.add_argument("text", nargs="+", metavar="TEXT",
                      help="the status (words are joined with blanks); - reads standard input")
    actions.add_parser("clear", parents=[common], help="remove your status",
                       description="Remove your status.")

    server = sub.add_parser(
        "status-server", help="the status service (what fingerd-status.service runs)",
        description="Serve the status socket: users' statuses, kept in the state directory. "
                    "Takes its socket from systemd (fingerd-status.socket) or listens on "
                    "--socket itself.")
    server.add_argument("--socket", metavar="PATH",
                        help=f"listen here when systemd passes no socket (default: "
                             f"{DEFAULT_SOCKET})")
    server.add_argument("--state-dir", metavar="DIR",
                        help="where statuses are kept (default: $STATE_DIRECTORY, else "
                             "/var/lib/fingerd-status)")
    server.add_argument("--idle-exit", metavar="SECONDS", type=float, default=None,
                        help="exit after this long without a connection; 0: never (default: "
                             "600 when socket-activated, else never)")
    server.add_argument("--request-timeout", metavar="SECONDS", type=float, default=5.0,
                        help="how long a client may take to send its request (default: 5)")


def run(args: argparse.Namespace) -> int:
    if args.command == "status-server":
        from fingerd.status_server import main

        return main(args.socket, args.state_dir, args.idle_exit, args.request_timeout)
    try:
        return _status(args)
    except StatusError as e:
        print(f"fingerd status: {e}", file=sys.stderr)
        return 1


def _me() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise StatusError(f"your UID {os.getuid()} has no account name") from None


def _status(args: argparse.Namespace) -> int:
    path = getattr(args, "socket", DEFAULT_SOCKET)
    user = getattr(args, "user", None) or _me()
    if not valid_user(user):
        raise StatusError(f"--user {shown(user)!r}: not a user name")
    if args.action == "set":
        seconds = 0
        if args.duration is not None:
            try:
                seconds = parse_duration(args.duration)
            except ValueError as e:
                raise StatusError(str(e)) from None
        text = _read_stdin() if args.text == ["-"] else " ".join(args.text)
        try:
            request = format_set(user, check_text(text), seconds)
        except ProtocolError as e:
            raise StatusError(e.message) from None
        _done(ask(path, request))
        until = f"until {when(int(time.time()) + seconds)}" if seconds else "no expiry"
        print(f"Status of {user} set ({until}).")
        return 0
    if args.action == "clear":
        reply = _done(ask(path, format_clear(user)))
        print(f"Status of {user} cleared." if reply.kind != NONE else
              f"{user} had no status to clear.")
        return 0
    reply = _done(ask(path, format_get(user)))
    if reply.kind != STATUS:
        print(f"No status set for {user}.")
        return 0
    lines = shown(reply.text).split("\n")
    print("Status:  " + "\n         ".join(lines))
    print(f"Set:     {when(reply.set_at)}")
    if reply.expires_at:
        left = reply.expires_at - time.time()
        print(f"Expires: {when(reply.expires_at)} (in {format_duration(left)})")
    else:
        print("Expires: never")
    return 0


def _done(reply: Reply) -> Reply:
    if reply.kind == ERR:
        raise StatusError(shown(reply.message))
    if reply.kind not in (STATUS, NONE, OK):
        raise StatusError(f"unexpected reply from the status service ({BAD_REPLY})")
    return reply


def _read_stdin() -> str:
    data = sys.stdin.buffer.read(4 * MAX_TEXT_BYTES + 1)
    if len(data) > 4 * MAX_TEXT_BYTES:
        raise StatusError(f"status too long: more than {4 * MAX_TEXT_BYTES} bytes on standard "
                          f"input; the limit is {MAX_TEXT_BYTES} bytes (UTF-8) and "
                          f"{MAX_TEXT_LINES} lines")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StatusError("status is not UTF-8") from None
