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
    from fingerd.backend import Backend
    from fingerd.config import Config


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


def unavailable_service(path: str, error: ConfigError) -> FingerService:
    """A service that answers every query "Finger service unavailable", because of ``error``
    (the long-running front ends run it until the configuration is fixed)."""
    from fingerd.config import Options, ServerConfig

    return FingerService(ServerConfig(Options({}, path, "server")), (), path, str(error))
