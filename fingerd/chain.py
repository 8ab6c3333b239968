"""The backend chain, built from the config's ``[[backend]]`` tables.

Each table names a ``type``; fingerd/backends/__init__.py finds its class (a built-in module, or
a third party's entry point), and the class reads its own options. Everything that can go wrong
here is a configuration error naming the file, the table and the reason — also a third-party
plugin that fails to import or to start, whatever it raises — so that ``fingerd check``
reports it and the front ends answer ``Finger service unavailable`` instead of crashing.
"""

from __future__ import annotations

from fingerd.backends import UnknownBackend, backend_class
from fingerd.config import ConfigError
from fingerd.service import FingerService, reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from fingerd.backend import Backend
    from fingerd.config import Config

    T = TypeVar("T")


def build_chain(config: Config) -> list[tuple[str, Backend]]:
    """Instantiate the configured chain, as (name, backend) pairs, checking every option."""
    chain = []
    for spec in config.backends:
        try:
            cls = backend_class(spec.type)
        except UnknownBackend as e:
            raise spec.options.error("type", str(e)) from None
        except BaseException as e:
            raise spec.options.error("type", f"cannot load backend {spec.type!r}: "
                                     f"{reason(e)}") from None
        try:
            backend = cls(spec.options)
        except ConfigError:
            raise
        except BaseException as e:
            raise spec.options.error("type", f"backend {spec.type!r} failed to start: "
                                     f"{reason(e)}") from None
        spec.options.finish()
        chain.append((spec.name, backend))
    return chain


def service_from(config: Config) -> FingerService:
    """The finger service for ``config``: its ``[server]`` policy and its chain."""
    return FingerService(config.server, build_chain(config), config.path)


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
    from fingerd import log
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

    return FingerService(ServerConfig(Options({}, path, "server")), (), path, str(error))
