"""``[irc]``: where the bot connects, who it is, what it listens for, how fast it talks.

Checked at load like every table (fingerd.config.Options): a wrong type, a bad value or an
unknown key is an error naming the file, the line and the key. The secret (a server password
or a SASL password) is never in this world-readable file: it comes from ``password_file`` or
from a systemd credential (``password_credential``, ``LoadCredential=`` in the unit), and is read
when the bot starts, not by ``fingerd check``.
"""

from __future__ import annotations

import os

from fingerd.irc.message import valid_channel, valid_nick

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options



class SecretError(Exception):
    """The secret could not be read; ``str()`` says where from and why."""


class IrcConfig:
    """The typed ``[irc]`` table. The connection settings are compared on SIGHUP
    (:meth:`connection`) to tell whether the bot must reconnect."""

    def __init__(self, options: Options) -> None:
        self.path = options.path
        self.server = options.string("server")
        if not self.server or (any(c in self.server for c in " /:@") and not _ipv6(self.server)):
            raise options.error("server", f"expected a host name or address, got {self.server!r}")
        self.tls = options.boolean("tls", True)
        self.port = options.integer("port", 6697 if self.tls else 6667, minimum=1,
                                    maximum=65535)
        self.ca_file = options.string("ca_file", "")
        if self.ca_file and not self.tls:
            raise options.error("ca_file", "only with tls = true")
        self.nick = options.string("nick")
        self.alt_nicks = options.string_list("alt_nicks", [])
        for key, nicks in (("nick", [self.nick]), ("alt_nicks", self.alt_nicks)):
            for nick in nicks:
                if not valid_nick(nick):
                    raise options.error(key, f"{nick!r} is not a valid nick (RFC 2812: a "
                                             "letter first, letters, digits and []\\`_^{|}-, "
                                             "at most 30)")
        self.user = options.string("user", "fingerd")
        if not self.user or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in self.user):
            raise options.error("user", f"expected letters, digits, '-', '_', '.', "
                                        f"got {self.user!r}")
        self.realname = options.string("realname", "fingerd: finger answers on IRC")
        self.channels = options.string_list("channels", [])
        for channel in self.channels:
            if not valid_channel(channel):
                raise options.error("channels", f"{channel!r} is not a channel name (#name, "
                                                "no spaces or commas)")
        self.prefix = options.string("prefix", "!finger")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise options.error("prefix", f"expected one word, got {self.prefix!r}")
        self.channel_lines = options.integer("channel_lines", 4, minimum=1, maximum=20)
        self.send_burst = options.integer("send_burst", 4, minimum=1, maximum=20)
        self.send_interval = options.number("send_interval", 1.0, maximum=60.0)
        self.reconnect_max_delay = options.number("reconnect_max_delay", 300.0)
        if options.string("password", ""):
            raise options.error("password", "not here: this file is readable by everyone; "
                                            "use password_file or password_credential")
        self.password_file = options.string("password_file", "")
        self.password_credential = options.string("password_credential", "")
        if self.password_file and self.password_credential:
            raise options.error("password_credential", "give password_file or "
                                                       "password_credential, not both")
        if self.password_credential and (
                "/" in self.password_credential or self.password_credential in (".", "..")):
            raise options.error("password_credential", "expected a credential name "
                                                        "(LoadCredential=NAME:...), not a path")
        if self.password_file and not os.path.isabs(self.password_file):
            raise options.error("password_file", "expected an absolute path")
        self.sasl_username = options.string("sasl_username", "")
        if self.sasl_username and not (self.password_file or self.password_credential):
            raise options.error("sasl_username", "needs password_file or password_credential")
        options.finish()

    def connection(self) -> tuple[object, ...]:
        """What a change of needs a new connection."""
        return (self.server, self.port, self.tls, self.ca_file, self.nick, tuple(self.alt_nicks),
                self.user, self.realname, self.password_file, self.password_credential,
                self.sasl_username)

    def secret(self) -> str:
        """The password, or "" when none is configured. SecretError if it cannot be read."""
        from fingerd.credentials import CredentialError, read, read_file

        if self.password_credential:
            path = f"credential {self.password_credential}"
            try:  # systemd's LoadCredential= (fingerd/credentials.py)
                secret = read(self.password_credential).rstrip("\r\n")
            except CredentialError as e:
                raise SecretError(str(e)) from None
        elif self.password_file:
            path = self.password_file
            try:
                secret = read_file("the password file", path).rstrip("\r\n")
            except CredentialError as e:
                raise SecretError(f"cannot read the password: {e}") from None
        else:
            return ""
        if not secret or any(c in secret for c in "\r\n\0"):
            raise SecretError(f"{path}: empty, or more than one line")
        return secret


def _ipv6(host: str) -> bool:
    return ":" in host and all(c in "0123456789abcdefABCDEF:." for c in host)
