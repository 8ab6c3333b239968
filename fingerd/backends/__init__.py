"""Finding a backend class by its config ``type``, and building the configured chain.

Built-in types map to a module here by name, without looking at installed packages, and only
the configured ones are imported. Any other type is looked up in the entry-point group
``fingerd.backends``; importlib.metadata is slow to import and to scan, so only a config that
names a third-party backend pays for it.

The chain is built from the config's ``[[backend]]`` tables: each names a ``type``, and the
class reads its own options. Everything that can go wrong here is a configuration error naming
the file, the table and the reason — also a third-party plugin that fails to import or to
start, whatever it raises — so that ``fingerd check`` reports it and the front ends answer
``Finger service unavailable`` instead of crashing.
"""

from fingerd.config import ConfigError
from fingerd.service import FingerService, reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.backend import Backend
    from fingerd.config import Config

ENTRY_POINT_GROUP = "fingerd.backends"

# type -> "module:class"
BUILTIN = {
    "static": "fingerd.backends.static:StaticBackend",
    "file": "fingerd.backends.file:FileBackend",
    "local": "fingerd.backends.local:LocalBackend",
    "http": "fingerd.backends.http:HttpBackend",
    "status": "fingerd.backends.status:StatusBackend",
}


class UnknownBackend(LookupError):
    """No built-in backend and no installed entry point has this type name."""


def _import(target: str) -> "type[Backend]":
    module_name, _, attr = target.partition(":")
    obj = __import__(module_name, fromlist=[attr])  # importlib.import_module, without importlib
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def backend_class(type_name: str) -> "type[Backend]":
    """The class for ``type = "<type_name>"``; raises :class:`UnknownBackend`."""
    target = BUILTIN.get(type_name)
    if target is not None:
        return _import(target)
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP, name=type_name)
    if not found:
        known = ", ".join(sorted({*BUILTIN, *available_plugins()}))
        raise UnknownBackend(f"unknown backend type {type_name!r} (known: {known})")
    cls: type[Backend] = next(iter(found)).load()
    return cls


def available_plugins() -> list[str]:
    """The type names that installed third-party packages provide."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def build_chain(config: "Config") -> "list[tuple[str, Backend]]":
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


def service_from(config: "Config") -> "FingerService":
    """The finger service for ``config``: its ``[server]`` policy and its chain."""
    return FingerService(config.server, build_chain(config), config.path)
