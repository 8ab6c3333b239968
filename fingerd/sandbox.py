"""Does the configuration need the network, and does the sandbox it runs in allow it?

The package's units take the network away (``PrivateNetwork=yes``, ``RestrictAddressFamilies=
AF_UNIX``, ``IPAddressDeny=any``): that is the faster and tighter sandbox, and only the
``http`` backend and forwarding need more. For those, the admin links the drop-in
:data:`NETWORK_DROPIN` into the unit's ``.d`` directory (README, "Network access"). A
configuration that needs the network in a unit that does not allow it is reported, with that
command, by

- ``fingerd check`` (:func:`check`), which asks systemd for the effective settings of the unit
  that serves (``systemctl show``: what is true after every drop-in and every edit), and
- the handler (:func:`report_if_offline`), which looks at its own process: whether it may make
  an IP socket at all, and whether it shares the network namespace of the client's connection.
  Only a configuration that needs the network pays for it: importing this module costs about
  0.4 ms, the look 14 µs (`python3 -X importtime`, a timeit loop; an http lookup costs more,
  and importing the http backend 0.8 ms). The shipped configuration imports nothing from here.
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fingerd.backend import Backend
    from fingerd.config import Config

NETWORK_DROPIN = "/usr/share/fingerd/network.conf"
PER_CONNECTION = "fingerd@.service"
SERVER = "fingerd-server.service"
# Which socket starts which service; fingerd@.service is asked about through an instance.
WEB = "fingerd-web.service"
SOCKETS = {"fingerd.socket": PER_CONNECTION, "fingerd-server.socket": SERVER,
           "fingerd-web.socket": WEB}
_SHOW_AS = {PER_CONNECTION: "fingerd@check.service", SERVER: SERVER, WEB: WEB}
_PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState", "NeedDaemonReload",
               "PrivateNetwork", "RestrictAddressFamilies", "IPAddressDeny", "IPAddressAllow")
# getsockopt(2) option for the network namespace of a socket (Linux 5.14, asm-generic value;
# _socket does not name it).
_SO_NETNS_COOKIE = 71
_EAFNOSUPPORT = 97


def network_needs(config: "Config", chain: "Sequence[tuple[str, Backend]]") -> list[str]:
    """What in the configuration opens network connections, one phrase each (empty: nothing).

    A backend says so with ``needs_network = True`` (fingerd.backend); ``chain`` is the built
    chain, in the order of ``config.backends``.
    """
    reasons = [f"backend {name!r} (type {spec.type})"
               for spec, (name, backend) in zip(config.backends, chain, strict=True)
               if getattr(backend, "needs_network", False)]
    if config.server.forwarding:
        reasons.append("[server] forwarding = true")
    return reasons


def switch_command(unit: str) -> str:
    """The one line that gives ``unit`` the network: the drop-in, linked so that package
    upgrades update it, and systemd told."""
    directory = f"/etc/systemd/system/{unit}.d"
    command = (f"mkdir -p {directory} && ln -sf {NETWORK_DROPIN} {directory}/network.conf"
               " && systemctl daemon-reload")
    if unit in (SERVER, WEB):  # a running server keeps the sandbox it started with
        command += f" && systemctl try-restart {unit}"
    return command


# -- the handler: what its own process can do -----------------------------------------------------

def offline_reasons(fd: int = 0) -> list[str]:
    """What keeps this process off the network, as seen from inside: no IP sockets allowed
    (RestrictAddressFamilies=), or a network namespace other than that of the socket ``fd``
    (PrivateNetwork=; the client's connection was accepted outside). ``IPAddressDeny=`` cannot
    be seen without sending a packet; ``fingerd check`` reports it."""
    import _socket

    reasons = []
    try:
        probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    except OSError as e:
        if e.errno != _EAFNOSUPPORT:
            return []  # out of descriptors, or the like: cannot tell, and must not fail
        reasons.append("RestrictAddressFamilies= allows no IP sockets")
        try:
            probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        except OSError:
            return reasons
    try:
        ours = probe.getsockopt(_socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
        outside = _socket.socket(fileno=fd)
        try:
            theirs = outside.getsockopt(_socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
        finally:
            outside.detach()  # fd 0 stays open: it is the client's
    except OSError:
        pass  # not a socket (a pipe, a test), or a kernel without SO_NETNS_COOKIE: cannot tell
    else:
        if ours != theirs:
            reasons.append("PrivateNetwork=yes: a network namespace of its own, with only its "
                           "own loopback")
    finally:
        probe.close()
    return reasons


def report_if_offline(config: "Config", chain: "Sequence[tuple[str, Backend]]",
                      fd: int = 0, unit: str = PER_CONNECTION) -> bool:
    """Log one error record when the configuration needs the network and this process has
    none, naming what needs it, what stops it and the command that allows it. Returns whether
    it logged."""
    needs = network_needs(config, chain)
    if not needs:
        return False
    offline = offline_reasons(fd)
    if not offline:
        return False
    from fingerd import log

    log.error(f"the configuration needs the network ({', '.join(needs)}), but this sandbox "
              f"has none ({'; '.join(offline)}); these lookups will fail. To allow it, run "
              f"`{switch_command(unit)}` (or `fingerd check`)", FINGER_SANDBOX="no-network")
    return True


# -- fingerd check: what systemd says ------------------------------------------------------------

def parse_show(text: str) -> dict[str, dict[str, str]]:
    """``systemctl show`` output for several units (blocks of Key=value lines separated by an
    empty line), by unit Id."""
    units: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


def _allows_ip(families: str) -> bool:
    """Whether a RestrictAddressFamilies= value as systemctl shows it lets AF_INET through:
    an allow list naming it, or a deny list ("~...", "~" alone for none) not naming it."""
    names = families.lstrip("~").split()
    if families.startswith("~") or not families:
        return "AF_INET" not in names
    return "AF_INET" in names


def blocking_settings(props: dict[str, str]) -> list[str]:
    """The settings of a service (as :func:`parse_show` gives them) that take the network
    away; empty if it has the network."""
    found = []
    if props.get("PrivateNetwork") == "yes":
        found.append("PrivateNetwork=yes")
    families = props.get("RestrictAddressFamilies", "")
    if not _allows_ip(families):
        found.append(f"RestrictAddressFamilies={families}")
    deny = props.get("IPAddressDeny", "").split()
    allow = [a for a in props.get("IPAddressAllow", "").split()
             if not a.startswith(("127.", "::1/"))]
    if ("0.0.0.0/0" in deny or "::/0" in deny) and not allow:
        found.append(f"IPAddressDeny={' '.join(deny)}")
    return found


class CannotAsk(Exception):
    """systemd could not be asked (no systemctl, no bus, an error); ``str()`` says why."""


class NotRunning(CannotAsk):
    """systemd is not the service manager here: no unit limits the network."""


def _systemctl_show(units: "Sequence[str]") -> str:
    """``systemctl show`` of ``units`` with the properties :func:`check` reads."""
    import subprocess

    if not os.path.isdir("/run/systemd/system"):  # sd_booted(3)
        raise NotRunning("systemd is not running")
    try:
        return subprocess.run(["systemctl", "show", "--property=" + ",".join(_PROPERTIES),
                               *units], capture_output=True, text=True, check=True,
                              timeout=30).stdout
    except OSError as e:
        raise CannotAsk(f"systemctl: {e.strerror}") from None
    except subprocess.CalledProcessError as e:
        raise CannotAsk((e.stderr.strip().splitlines() or [f"exit status {e.returncode}"])[0])\
            from None
    except subprocess.TimeoutExpired:
        raise CannotAsk("systemctl did not answer within 30 s") from None


def serving_unit_offline(show: "Callable[[Sequence[str]], str]" = _systemctl_show) -> str:
    """The unit that serves finger here if it has no network (its name), else "" (also when
    systemd cannot be asked): for ``fingerd query``, which then answers without it too."""
    try:
        shown = parse_show(show([*SOCKETS, *_SHOW_AS.values()]))
    except CannotAsk:
        return ""
    for socket, service in SOCKETS.items():
        props = shown.get(socket, {})
        if props.get("ActiveState") == "active" or props.get("UnitFileState") == "enabled":
            return service if blocking_settings(shown.get(_SHOW_AS[service], {})) else ""
    return ""


def check(config: "Config", chain: "Sequence[tuple[str, Backend]]",
          say: "Callable[[str], None]", complain: "Callable[[str], None]",
          show: "Callable[[Sequence[str]], str]" = _systemctl_show) -> bool:
    """``fingerd check``'s network lines: ``say`` what is fine, ``complain`` about a mismatch.
    Returns False when the configuration needs the network that the serving unit does not
    allow (or systemd still has to reload the units to tell)."""
    needs = network_needs(config, chain)
    what = f"needed ({', '.join(needs)})" if needs else "not needed"
    try:
        shown = parse_show(show([*SOCKETS, *_SHOW_AS.values()]))
    except CannotAsk as e:
        if not needs:
            say(f"  network: {what}")
        else:
            why = ("systemd is not running, so no unit limits it here" if isinstance(e, NotRunning)
                   else f"cannot ask systemd about the units ({e})")
            say(f"  network: {what}; {why}. Under systemd the units allow none until: "
                f"{switch_command(PER_CONNECTION)}")
        return True
    in_use = [service for socket, service in SOCKETS.items()
              if shown.get(socket, {}).get("ActiveState") == "active"
              or shown.get(socket, {}).get("UnitFileState") == "enabled"] or [PER_CONNECTION]
    ok = True
    for unit in in_use:
        props = shown.get(_SHOW_AS[unit], {})
        if props.get("NeedDaemonReload") == "yes":
            complain(f"{unit} changed on disk since systemd read it: run `systemctl "
                     f"daemon-reload`, then `fingerd check` again")
            ok = False
            continue
        blocked = blocking_settings(props)
        if needs and blocked:
            complain(f"the configuration needs the network ({', '.join(needs)}), but {unit} "
                     f"allows none ({', '.join(blocked)}): these lookups would fail. To allow "
                     f"it, run:\n  {switch_command(unit)}")
            ok = False
        elif needs:
            say(f"  network: {what}; {unit} allows it")
        elif blocked:
            say(f"  network: {what}; {unit} allows none")
        else:
            dropin = f"/etc/systemd/system/{unit}.d/network.conf"
            how = (f"`rm {dropin} && systemctl daemon-reload`" if os.path.lexists(dropin)
                   else f"removing what gives {unit} the network")
            say(f"  network: {what}; {unit} allows it all the same: {how} gives it the "
                f"tighter, faster sandbox")
    return ok
