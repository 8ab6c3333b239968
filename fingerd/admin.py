"""``fingerd check`` and ``fingerd query``: the admin's view, as the service sees it.

Run as root, both would otherwise see more than the service does: a configuration file that is
``0600 root`` (the service's unprivileged user cannot read it, and answers every query
"Finger service unavailable"), home directories that are ``0700`` (the ``local`` backend cannot
enter them). So as root they take an unprivileged identity first, as the service does
(``nobody``: like the units' ``DynamicUser=``, it owns no file and is in no group), and say
where root's view differs. What they need that only root may read — the secrets the units pass
as systemd credentials — is read before.

``check`` reports, with exit status 0 (all is well), 1 (the configuration is broken: the
service answers "unavailable") or 3 (valid, but some backend cannot work as configured):

- each file read (the main file and its drop-ins), or that there is none (built-in defaults);
- every error with its file, line and key; a "did you mean" for a mistyped key;
- what each backend's ``probe()`` finds (a status file that is not there, a URL that refuses,
  homes the service cannot enter), each within ``[server] backend_timeout``;
- ``--dump``: the effective configuration, drop-ins merged, defaults filled in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from fingerd import log, tomlout
from fingerd.config import ConfigError, load
from fingerd.log import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fingerd.backend import Backend
    from fingerd.config import Config

OK, BROKEN, DEGRADED = 0, 1, 3
SERVICE_USER = "nobody"
# The units that may pass credentials to fingerd (fingerd@.service as an instance).
UNITS = ("fingerd@check.service", "fingerd-server.service", "fingerd-web.service",
         "fingerd-irc.service")


def as_service(work: Callable[[], int], offline: bool = False) -> int:
    """``work()`` under the service's identity: as root, in a child process that has become
    ``nobody`` (no groups), and with ``offline`` in a network namespace of its own, as the
    units' ``PrivateNetwork=yes`` gives the service; otherwise right here. Returns its exit
    status."""
    if os.geteuid() != 0:
        return work()
    import pwd

    _units_credentials()
    nobody = pwd.getpwnam(SERVICE_USER)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = BROKEN
        try:
            if offline:
                _unshare_network()
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            status = work()
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else BROKEN
        except BaseException as e:
            print(f"fingerd: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def _unshare_network() -> None:
    """unshare(2) CLONE_NEWNET: no network but a loopback that is down (os.unshare() is
    Python 3.12's)."""
    import ctypes

    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(clone_newnet) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _units_credentials() -> None:
    """Where the units' ``LoadCredential=NAME:PATH`` take their secrets from, for
    ``{credential:NAME}`` in the configuration (read by root, like systemd does)."""
    from fingerd.credentials import CredentialError, read_file, remember

    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return
    for unit in UNITS:
        # `systemctl show -P LoadCredential` says "[unprintable]" (systemd 252): read the unit
        # and its drop-ins as systemd does, in order; an empty assignment resets the list.
        try:
            out = subprocess.run([systemctl, "cat", "--", unit], capture_output=True,
                                 text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        credentials: dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() != "LoadCredential":
                continue
            name, _, path = value.strip().partition(":")
            if not name:
                credentials.clear()
            elif path:
                credentials[name] = path
        _given[unit] = set(credentials)
        for name, path in credentials.items():
            try:
                remember(name, read_file(f"credential {name!r}", path))
            except CredentialError:
                continue  # check reports it where the config uses it


# Per unit, the credentials its LoadCredential= lines give it (filled by _units_credentials).
_given: dict[str, set[str]] = {}


def _credentials_used(value: object) -> set[str]:
    """The NAMEs of every ``{credential:NAME}`` in a configuration table."""
    if isinstance(value, str):
        names = set()
        rest = value
        while (start := rest.find("{credential:")) >= 0 and (end := rest.find("}", start)) > 0:
            names.add(rest[start + len("{credential:"):end])
            rest = rest[end + 1:]
        return names
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    return set().union(*(_credentials_used(item) for item in items))


def _credentials_missing(config: Config) -> list[str]:
    """Units that serve here (their socket or themselves enabled or active) but are not
    given a credential the configuration uses: their lookups (or the bot's login) would fail
    where root's check, which read every unit's, did not."""
    used = _credentials_used(dict(config.table))
    # The bot's password is named, not templated. Read from the raw table: a broken [irc]
    # table is _frontends' to report, and must not hide the other units' problems here.
    irc_table = config.table.get("irc")
    irc_password = irc_table.get("password_credential") if isinstance(irc_table, dict) else None
    bot_uses = used | ({irc_password} if isinstance(irc_password, str) and irc_password else set())
    if not bot_uses or not _given:
        return []
    from fingerd import sandbox

    try:
        shown = sandbox.parse_show(sandbox._systemctl_show(
            [*sandbox.SOCKETS, "fingerd-irc.service"]))
    except sandbox.CannotAsk:
        return []
    serving = [service for socket, service in sandbox.SOCKETS.items()
               if shown.get(socket, {}).get("ActiveState") == "active"
               or shown.get(socket, {}).get("UnitFileState") == "enabled"]
    irc = shown.get("fingerd-irc.service", {})
    if irc.get("ActiveState") == "active" or irc.get("UnitFileState") == "enabled":
        serving.append("fingerd-irc.service")
    problems = []
    for service in serving:
        unit = "fingerd@check.service" if service == sandbox.PER_CONNECTION else service
        needed = bot_uses if service == "fingerd-irc.service" else used
        missing = sorted(needed - _given.get(unit, set()))
        if missing:
            problems.append(f"{service} is not given the credential(s) {', '.join(missing)} "
                            f"that the configuration uses: add LoadCredential= for them to it "
                            f"(`systemctl edit {service}`)")
    return problems


def _broken(e: ConfigError) -> int:
    """Say why the configuration cannot be used: on the terminal, or to the journal at
    priority err (``ExecReload=`` runs ``check`` with its stderr on the journal)."""
    message = escape(str(e))
    if os.geteuid() != 0 and "Permission denied" in e.reason:
        message += (" (the service's user cannot read it: make it readable by others, "
                    "chmod 644, and keep secrets in credentials: see fingerd.toml(5))")
    log.error(message)
    return BROKEN


def check(config_path: str | None, *, probe: bool = True, dump: bool = False,
          quiet: bool = False, front_end: str = "all") -> int:
    """``fingerd check``: see the module docstring. ``front_end``: whose tables to validate
    besides ``[server]`` and the backends (``finger``: none; ``web``, ``irc``; ``all``)."""
    root = os.geteuid() == 0

    def work() -> int:
        try:
            config = load(config_path)
            from fingerd.backends import build_chain

            chain = build_chain(config)
            frontends = _frontends(config, front_end)
        except ConfigError as e:
            return _broken(e)
        if dump:
            print(_dump(config), end="")
            return OK
        return _report(config, chain, frontends, probe=probe, quiet=quiet, as_nobody=root)

    return as_service(work)


def _report(config: Config, chain: list[tuple[str, Backend]], frontends: list[str], *,
            probe: bool, quiet: bool, as_nobody: bool) -> int:
    from fingerd.handler import with_alarm

    files = config.files
    if not files:
        head = (f"{escape(config.path)}: absent: the built-in defaults (no backend, nothing "
                "disclosed)")
    else:
        head = f"{escape(files[0])}: OK"
    if as_nobody:
        head += f" (read as {SERVICE_USER}, as the service reads it)"
    problems: list[str] = []
    lines = [head]
    for file in files[1:]:
        lines.append(f"  drop-in {escape(file)}")
    server = config.server
    lines.append(f"  list_users = {str(server.list_users).lower()}, "
                 f"forwarding = {str(server.forwarding).lower()}, "
                 f"read_timeout = {server.read_timeout:g} s")
    if not chain:
        lines.append("  no backends: every user is answered as unknown")
    for number, (name, backend) in enumerate(chain, 1):
        cls = type(backend)
        found: list[str] = []
        if probe:
            try:
                found = with_alarm(server.backend_timeout, backend.probe)
            except Exception as e:  # a probe that fails is a finding too
                found = [f"{type(e).__name__}: {e}" if str(e) else type(e).__name__]
        state = "" if not probe else ": ok" if not found else ": WARNING"
        lines.append(f"  backend {number}: {escape(name)} ({cls.__module__}.{cls.__qualname__})"
                     f"{state}")
        for item in found:
            lines.append(f"    {escape(item)}")
            problems.append(item)
    if probe:  # the sandbox of the units that serve: does it let the backends out?
        from fingerd import sandbox

        def complain(message: str) -> None:
            problems.append(message)
            lines.extend(f"  WARNING: {line}" if number == 0 else f"  {line}"
                         for number, line in enumerate(escape(message, keep="\n").split("\n")))

        sandbox.check(config, chain, lambda line: lines.append(escape(line)), complain)
        for problem in _credentials_missing(config):
            complain(problem)
    lines += frontends
    if not quiet or problems:
        print("\n".join(lines))
    return DEGRADED if problems else OK


def _frontends(config: Config, which: str) -> list[str]:
    """A line for each front end's table the file has, checked as that front end reads it
    (a ConfigError propagates: the configuration is broken for that front end). ``which``:
    the front end whose reload this check guards, so that a mistake in another one's table
    does not stop it (``all`` for the admin)."""
    lines = []
    irc = config.frontends["irc"]
    if which in ("all", "irc") and not irc.empty():
        from fingerd.irc.config import IrcConfig

        bot = IrcConfig(irc)
        secret = (f", password from credential {bot.password_credential}"
                  if bot.password_credential else
                  f", password from {bot.password_file}" if bot.password_file else "")
        channels = ", ".join(bot.channels) or "no channel"
        lines.append(escape(f"  irc: {bot.nick} on {bot.server}:{bot.port}"
                            f"{' (TLS)' if bot.tls else ''} in {channels}{secret}"))
    if which in ("all", "web"):
        from fingerd.web.settings import WebSettings

        web = WebSettings(config.frontends["web"])
        if web.configured:
            lines.append(f"  web: {escape(web.summary())}")
    return lines


def _dump(config: Config) -> str:
    """The effective configuration as TOML: every file merged, ``[server]`` complete."""
    from fingerd.config import FRONTEND_TABLES

    server = config.server
    files = escape(", ".join(config.files)) or "no file: built-in defaults"
    out = [f"# fingerd check --dump: {files}",
           "", "[server]"]
    values = {"list_users": server.list_users, "forwarding": server.forwarding,
              "read_timeout": server.read_timeout, "backend_timeout": server.backend_timeout,
              "no_such_user": server.no_such_user, "no_information": server.no_information,
              "conceal_unknown": server.conceal_unknown,
              "max_answer_bytes": server.max_answer_bytes,
              "max_connections": server.max_connections,
              "max_connections_per_source": server.max_connections_per_source,
              "max_unsent_bytes": server.max_unsent_bytes,
              "output_charset": "ascii" if server.ascii_only else "utf-8"}
    out += [f"{key} = {tomlout.value(value)}" for key, value in values.items()]
    for name in FRONTEND_TABLES:
        table = config.table.get(name)
        if isinstance(table, dict) and table:
            out += ["", *tomlout.table(name, table)]
    for spec in config.backends:
        out += ["", f"[[backend]]  # from {escape(spec.options.path)}",
                *tomlout.table("", spec.options.items(), path="backend")]
    return "\n".join(out) + "\n"


def query(config_path: str | None, words: list[str], remote: str = "") -> int:
    """``fingerd query``: exactly the bytes a client would get, as the service's user."""
    def work() -> int:
        from fingerd.backends import service_from
        from fingerd.handler import alarm_runner

        try:
            service = service_from(load(config_path))
        except ConfigError as e:
            return _broken(e)
        # surrogateescape: an argument that is not UTF-8 reaches the service as the bytes a
        # client would send, and is answered as theirs would be.
        line = " ".join(words).encode("utf-8", "surrogateescape") + b"\r\n"
        reply = service.respond(line, alarm_runner, remote)
        sys.stdout.buffer.write(reply.data)
        sys.stdout.flush()
        return OK

    offline = ""
    if os.geteuid() == 0:
        from fingerd.sandbox import serving_unit_offline

        offline = serving_unit_offline()
        sandbox = f", without network as {offline}" if offline else ""
        print(f"fingerd: answering as {SERVICE_USER}{sandbox}, as the service would",
              file=sys.stderr)
    return as_service(work, offline=bool(offline))

