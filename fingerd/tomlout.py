"""Writing TOML, which the standard library only reads: for ``fingerd check --dump`` and the
configuration files the tests write. Values as tomllib returns them; dates and times as text.
"""

from __future__ import annotations

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def key(name: str) -> str:
    """A key: bare where TOML allows it, else quoted."""
    bare = name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    return name if bare else value(name)


def value(item: object) -> str:
    """An inline value: a basic string (control characters escaped), a number, a boolean, an
    array or an inline table."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return repr(item)
    if isinstance(item, str):
        return '"' + "".join(_ESCAPES.get(c) or (c if c.isprintable() else _unicode(c))
                             for c in item) + '"'
    if isinstance(item, list):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + "}"
    return value(str(item))


def _unicode(c: str) -> str:
    """A character TOML and a terminal should not see as it is (controls, C1, bidi)."""
    code = ord(c)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def table(name: str, items: dict[str, object], path: str | None = None) -> list[str]:
    """``[name]`` and its keys, then its sub-tables as ``[path.sub]`` (``path`` defaults to
    ``name``; ``name`` "": no header, for an ``[[array]]`` entry whose caller writes it)."""
    path = name if path is None else path
    lines = [f"[{name}]"] if name else []
    nested = []
    for k, v in items.items():
        if isinstance(v, dict):
            nested.append((k, v))
        else:
            lines.append(f"{key(k)} = {value(v)}")
    for k, v in nested:
        sub = f"{path}.{key(k)}" if path else key(k)
        lines += ["", *table(sub, v)]
    return lines
