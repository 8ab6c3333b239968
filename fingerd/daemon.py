"""Process plumbing for the long-running front ends: listening sockets, readiness, identity,
reloading.

``fingerd serve`` (and the other long-running front ends) take their listening sockets from
systemd (``LISTEN_FDS``, sd_listen_fds(3)) or bind them from ``--listen``, tell systemd when they
are ready (sd_notify(3), ``Type=notify``), and, when started as root by hand, switch to an
unprivileged user after binding (as the Twisted tutorial's ``Application(uid=, gid=)`` does).
python-systemd's ``systemd.daemon`` is used when it is installed (the Debian package depends on
it); otherwise the same protocols are spoken here. On SIGHUP they read the configuration again
and swap in its service (:func:`reloaded`), or, while it is broken, answer "unavailable"
(:func:`unavailable_service`) and try again every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import os
import socket

from fingerd import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from fingerd.config import Config
    from fingerd.service import FingerService

    T = TypeVar("T")

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
# With a broken configuration a long-running front end answers "unavailable" and tries the
# configuration again this often (seconds), so that it recovers once the file is fixed.
RETRY_SECONDS = 2.0


class UsageError(Exception):
    """A command-line problem, reported in one line."""


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` -> (host, port); host ``""``: every
    address."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:1079 or [::1]:79")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _every_address() -> tuple[socket.socket, str]:
    """``:PORT``: every address, IPv6 and IPv4, on one socket (as fingerd.socket's
    ``ListenStream=79``), whatever net.ipv6.bindv6only says; IPv4 alone where the kernel has
    no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"  # noqa: S104
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock, "::"


def bind(spec: str) -> socket.socket:
    """A listening TCP socket for ``--listen spec``."""
    host, port = parse_listen(spec)
    if host:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
    else:
        sock, host = _every_address()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {spec}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def systemd_sockets() -> list[socket.socket]:
    """Listening sockets passed by systemd (``LISTEN_FDS``), per sd_listen_fds(3)."""
    try:
        from systemd.daemon import listen_fds
    except ImportError:
        fds = _listen_fds()
    else:
        fds = listen_fds(unset_environment=True)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def _listen_fds() -> list[int]:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def notify(state: str) -> None:
    """sd_notify(3): tell systemd we are ready / stopping, when it asked (Type=notify)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    try:
        from systemd.daemon import notify as sd_notify
    except ImportError:
        pass
    else:
        if not sd_notify(state):
            log.warning(f"sd_notify({state!r}) failed")
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as e:
        log.warning(f"sd_notify failed: {e}")


def drop_privileges(user: str | None) -> None:
    """Become ``user`` after binding; refuse to serve as root without one."""
    import pwd

    if os.geteuid() != 0:
        if user:
            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                raise UsageError(f"--user {user}: no such user") from None
            if uid != os.geteuid():
                raise UsageError(f"--user {user}: only root can switch users")
        return
    if not user:
        raise UsageError("refusing to serve as root: pass --user USER (an unprivileged "
                         "account to switch to once the ports are bound)")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    if entry.pw_uid == 0:
        raise UsageError(f"--user {user}: that is root")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def listening_sockets(listen: list[str], default: str) -> list[socket.socket]:
    """systemd's sockets if it passed any, else those of ``--listen`` (or ``default``)."""
    return systemd_sockets() or [bind(spec) for spec in (listen or [default])]


def socket_name(sock: socket.socket) -> str:
    """``host:port`` of a listening socket, for log lines."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reloaded(config_path: str | None, current: FingerService, read: Callable[[Config], T], *,
             retry: bool = False, answer: str = "Finger service unavailable"
             ) -> tuple[FingerService, T | None] | None:
    """SIGHUP (or, with ``retry``, the periodic attempt while broken) in a long-running front
    end: the service of the configuration as it is now and what ``read`` makes of the rest of
    it (the front end's own table); None: keep everything as it is.

    Any error (a ConfigError, or whatever a parser or a plugin raises) is logged at err and
    the running configuration kept; while ``current`` is itself broken, a new error becomes
    its reason (``(unavailable service, None)``), and a retry that meets the same error again
    logs nothing.
    """
    from fingerd.backends import service_from
    from fingerd.config import load

    try:
        config = load(config_path)
        return service_from(config), read(config)
    except Exception as e:
        if retry and str(e) == current.broken:
            return None
        if current.broken:
            log.error(f"configuration error, answering {answer!r} until it is fixed: {e}")
            return unavailable_service(current.path, e), None
        log.error(f"reload failed, keeping the running configuration: {e}")
        return None


def unavailable_service(path: str, error: Exception) -> FingerService:
    """A service that answers every query "Finger service unavailable", because of ``error``
    (the long-running front ends run it until the configuration is fixed)."""
    from fingerd.config import Options, ServerConfig
    from fingerd.service import FingerService

    return FingerService(ServerConfig(Options({}, path, "server")), (), path, str(error))
