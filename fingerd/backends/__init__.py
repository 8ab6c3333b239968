"""Finding a backend class by its config ``type``.

Built-in types map to a module here by name, without looking at installed packages, and only
the configured ones are imported. Any other type is looked up in the entry-point group
``fingerd.backends``; importlib.metadata is slow to import and to scan, so only a config that
names a third-party backend pays for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.backend import Backend

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


def _import(target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    obj = __import__(module_name, fromlist=[attr])  # importlib.import_module, without importlib
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def backend_class(type_name: str) -> type[Backend]:
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
