"""The ``fingerd`` command.

``fingerd`` alone (or with ``--config PATH``) is the per-connection handler and takes a fast
path that imports neither argparse nor any subcommand. Everything else is for people:

    fingerd query [/W] [USER]          what a client would get, no network involved
    fingerd check                      validate the config, list the backend chain
    fingerd serve --listen HOST:PORT   a standalone server (no systemd needed)
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence


def _handler_config(argv: Sequence[str]) -> tuple[bool, str | None]:
    """Is this a handler invocation, and with which --config? Cheap: no argparse."""
    if not argv:
        return True, None
    if len(argv) == 2 and argv[0] == "--config":
        return True, argv[1]
    if len(argv) == 1 and argv[0].startswith("--config="):
        return True, argv[0].partition("=")[2]
    return False, None


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    is_handler, config_path = _handler_config(args)
    if is_handler:
        from fingerd.handler import main as handle

        return handle(config_path)
    return _commands(args)


def run() -> None:
    """The process entry point of bin/fingerd: :func:`main`, then exit.

    The per-connection handler leaves without the interpreter's teardown (freeing every module
    and object one by one), which is about a tenth of a connection's CPU time: its answer is
    written with os.write(), its log record is sent, and it holds no other resource. The
    commands for people exit the usual way.
    """
    args = sys.argv[1:]
    if not _handler_config(args)[0]:
        sys.exit(main(args))
    status = main(args)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a client or journal that went away; the exit status says what it has to
    import posix

    posix._exit(status)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from fingerd import __version__
    from fingerd.config import DEFAULT_PATH

    config_help = f"config file (default: $FINGERD_CONFIG or {DEFAULT_PATH})"
    parser = argparse.ArgumentParser(
        prog="fingerd",
        description="RFC 1288 finger server. Without a command, answer one query on "
                    "stdin/stdout (as systemd's fingerd@.service or inetd runs it).")
    parser.add_argument("--version", action="version", version=f"fingerd {__version__}")
    parser.add_argument("--config", metavar="PATH", help=config_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    query = sub.add_parser("query", help="print what a client would get for a query",
                           description="Print exactly the bytes a client would get for "
                                       "`[/W] [USER]`, without any network.")
    query.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    query.add_argument("words", nargs="*", metavar="[/W] [USER]",
                       help="the query, as a finger client sends it: /W for the long form")

    check = sub.add_parser("check", help="validate the config and list the backend chain",
                           description="Validate the config; exit 1 with the reason if it "
                                       "is broken.")
    check.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)

    serve = sub.add_parser("serve", help="run a standalone server in the foreground",
                           description="Serve finger queries on TCP, answering exactly as "
                                       "the per-connection handler does.")
    serve.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    serve.add_argument("--listen", metavar="HOST:PORT", action="append", default=[],
                       help="address to listen on, repeatable; IPv6 as [::1]:79 "
                            "(default when systemd passes no sockets: 127.0.0.1:1079)")
    serve.add_argument("--user", metavar="USER",
                       help="when started as root: the user to switch to after binding")
    return parser


def _commands(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("unknown arguments; see --help")
    from fingerd.config import ConfigError

    try:
        if args.command == "query":
            return _query(args.config, args.words)
        if args.command == "check":
            return _check(args.config)
        from fingerd.server import serve

        return serve(args.config, args.listen, args.user)
    except ConfigError as e:
        print(f"fingerd: {e}", file=sys.stderr)
        return 1


def _query(config_path: str | None, words: list[str]) -> int:
    from fingerd.config import load
    from fingerd.handler import alarm_timer
    from fingerd.service import FingerService

    service = FingerService(load(config_path), alarm_timer)
    reply = service.respond(" ".join(words).encode("utf-8") + b"\r\n")
    sys.stdout.buffer.write(reply.data)
    sys.stdout.flush()
    return 0


def _check(config_path: str | None) -> int:
    from fingerd.config import load
    from fingerd.service import build_backends

    config = load(config_path)
    chain = build_backends(config)
    server = config.server
    print(f"{config.path}: OK")
    print(f"  list_users = {str(server.list_users).lower()}, "
          f"forwarding = {str(server.forwarding).lower()}, "
          f"read_timeout = {server.read_timeout:g} s")
    if not chain:
        print("  no backends: every user is answered as unknown")
    for number, (name, backend) in enumerate(chain, 1):
        cls = type(backend)
        print(f"  backend {number}: {name} ({cls.__module__}.{cls.__qualname__})")
    from fingerd import sandbox

    return 0 if sandbox.check(config, chain, print, _complain) else 1


def _complain(message: str) -> None:
    print(f"fingerd: {message}", file=sys.stderr)
