"""The ``fingerd`` command.

``fingerd`` alone (or with ``--config PATH``) is the per-connection handler and takes a fast
path that imports neither argparse nor any subcommand. Everything else is for people:

    fingerd query [/W] [USER]          what a client would get, no network involved
    fingerd check                      validate the config, list the backend chain
    fingerd serve --listen HOST:PORT   a standalone server (no systemd needed)
    fingerd status [set TEXT | clear]  users' own status (fingerd/status_cli.py)
    fingerd irc                        the finger service on IRC: a bot ([irc] in the config)
    fingerd web --listen HOST:PORT     the web view and WebFinger over HTTP (fingerd/web/)
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence



def _handler_config(argv: "Sequence[str]") -> tuple[bool, str | None]:
    """Is this a handler invocation, and with which --config? Cheap: no argparse."""
    if not argv:
        return True, None
    if len(argv) == 2 and argv[0] == "--config":
        return True, argv[1]
    if len(argv) == 1 and argv[0].startswith("--config="):
        return True, argv[0].partition("=")[2]
    return False, None


def main(argv: "Sequence[str] | None" = None) -> int:
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


def _parser() -> "argparse.ArgumentParser":
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
    query.add_argument("--from", dest="remote", metavar="ADDRESS", default="",
                       help="answer as to a client at ADDRESS (e.g. 127.0.0.1: a local asker); "
                            "default: an address nobody vouches for, answered as remote")
    query.add_argument("words", nargs="*", metavar="[/W] [USER]",
                       help="the query, as a finger client sends it: /W for the long form")

    check = sub.add_parser(
        "check", help="validate the config as the service reads it, probe each backend",
        description="Validate the config and its drop-ins as the service's user reads them "
                    "(as root: as nobody), and probe each backend once. Exit 0: all well; 1: "
                    "the config is broken (the service answers \"unavailable\"); 3: valid, "
                    "but a backend cannot work as configured.")
    check.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    check.add_argument("--no-probe", dest="probe", action="store_false",
                       help="only validate: do not ask the backends (what `systemctl reload` "
                            "runs first)")
    check.add_argument("--dump", action="store_true",
                       help="print the effective configuration, drop-ins merged")
    check.add_argument("--quiet", action="store_true", help="print only problems")
    check.add_argument("--front-end", choices=("all", "finger", "web", "irc"), default="all",
                       help="validate only this front end's tables besides [server] and the "
                            "backends (what each unit's `systemctl reload` runs first)")

    serve = sub.add_parser("serve", help="run a standalone server in the foreground",
                           description="Serve finger queries on TCP, answering exactly as "
                                       "the per-connection handler does.")
    serve.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    serve.add_argument("--listen", metavar="HOST:PORT", action="append", default=[],
                       help="address to listen on, repeatable; IPv6 as [::1]:79, every address as "
                            ":79 (default when systemd passes no sockets: 127.0.0.1:1079)")
    serve.add_argument("--user", metavar="USER",
                       help="when started as root: the user to switch to after binding")

    web = sub.add_parser("web", help="serve the web view and WebFinger over HTTP",
                         description="Serve the finger answers as web pages, text and JSON, "
                                     "and WebFinger (RFC 7033), meant to sit behind a web "
                                     "server.")
    web.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    web.add_argument("--listen", metavar="HOST:PORT", action="append", default=[],
                     help="address to listen on, repeatable; IPv6 as [::1]:8079, every address "
                          "as :8079 (default when systemd passes no sockets: 127.0.0.1:8079)")
    web.add_argument("--user", metavar="USER",
                     help="when started as root: the user to switch to after binding")

    irc = sub.add_parser("irc", help="answer finger queries on IRC (a bot; see [irc])",
                         description="Connect to the IRC server of the config's [irc] table "
                                     "and answer `!finger NAME` from the finger service.")
    irc.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    irc.add_argument("--user", metavar="USER",
                     help="when started as root: the user to switch to once the password "
                          "is read")

    from fingerd.status_cli import add_parsers

    add_parsers(sub)  # status, status-server
    return parser


def _commands(argv: "Sequence[str]") -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("unknown arguments; see --help")
    if args.command in ("status", "status-server"):
        from fingerd.status_cli import run

        return run(args)
    from fingerd.config import ConfigError

    try:
        if args.command == "query":
            from fingerd.admin import query

            return query(args.config, args.words, args.remote)
        if args.command == "check":
            from fingerd.admin import check

            return check(args.config, probe=args.probe, dump=args.dump, quiet=args.quiet,
                         front_end=args.front_end)
        if args.command == "irc":
            from fingerd.irc.main import irc

            return irc(args.config, args.user)
        if args.command == "web":
            from fingerd.web.server import serve_web

            return serve_web(args.config, args.listen, args.user)
        from fingerd.server import serve

        return serve(args.config, args.listen, args.user)
    except ConfigError as e:
        from fingerd.log import escape

        print(f"fingerd: {escape(str(e))}", file=sys.stderr)
        return 1
