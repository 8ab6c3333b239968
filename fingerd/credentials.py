"""Secrets from systemd credentials: ``{credential:NAME}`` in a configuration value.

systemd reads the file named by ``LoadCredential=NAME:PATH`` as root when it starts the unit,
and gives the service a copy in ``$CREDENTIALS_DIRECTORY`` that only the service's own user can
read and that is gone when it stops (systemd.exec(5), "Credentials"). The secret's file itself
stays ``0600 root``, and the configuration, which every local user may read, names it only.

The admin commands (``fingerd check``, ``fingerd query``) run outside the unit: as root they
read the credentials where the units' ``LoadCredential=`` say, and keep them in memory
(:func:`remember`) before they take the service's identity.
"""

import os

MAX_BYTES = 64 * 1024

# NAME -> its text, for commands run outside the units.
_remembered: dict[str, str] = {}


class CredentialError(Exception):
    """A credential that is not there; the message says what to add to the unit."""


def remember(name: str, text: str) -> None:
    """Credential ``name``'s text, for when ``$CREDENTIALS_DIRECTORY`` has none."""
    _remembered[name] = text


def read(name: str) -> str:
    """The credential's text, without a final newline."""
    if not name or "/" in name or name in (".", ".."):
        raise CredentialError(f"{name!r} is not a credential name")
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    path = os.path.join(directory, name) if directory else ""
    if not path or not os.path.exists(path):
        if name in _remembered:
            return _remembered[name]
        raise CredentialError(f"credential {name!r} is not given to this service: add "
                              f"LoadCredential={name}:/etc/fingerd/secrets/{name} to its unit "
                              "(see fingerd.toml(5), \"Secrets\")")
    return read_file(f"credential {name!r}", path)


def read_file(what: str, path: str) -> str:
    """A secret's text from ``path`` (bounded, UTF-8, without a final newline); ``what`` names
    it in errors."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise CredentialError(f"{what} ({path}): {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise CredentialError(f"{what} is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{what} is not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text


def substitute(value: str) -> str:
    """``value`` with every ``{credential:NAME}`` replaced by that credential."""
    out = []
    rest = value
    while (start := rest.find("{credential:")) >= 0:
        end = rest.find("}", start)
        if end < 0:
            raise CredentialError("'{credential:' without its closing '}'")
        out.append(rest[:start])
        out.append(read(rest[start + len("{credential:"):end]))
        rest = rest[end + 1:]
    out.append(rest)
    return "".join(out)
