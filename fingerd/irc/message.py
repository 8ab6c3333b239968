"""IRC messages, RFC 2812 §2.3: parse a line from the server, format a line to send. No I/O.

::

    message  =  [ ":" prefix SPACE ] command [ params ] crlf
    params   =  *14( SPACE middle ) [ SPACE ":" trailing ]
             =/ 14( SPACE middle ) [ SPACE [ ":" ] trailing ]

IRCv3 message tags (``@a=b;c ...`` before the prefix) are skipped: the bot uses none. IRC has
no character set; servers relay bytes. Lines are decoded as UTF-8, and bytes that are not
UTF-8 become U+FFFD (a Latin-1 client's name still compares equal to itself).
"""

from __future__ import annotations

MAX_LINE_BYTES = 512  # RFC 2812 §2.3: including the CR LF
MAX_PARAMS = 15

# Characters that may never appear inside a parameter we send: they would end the line (CR,
# LF) or the string (NUL) on the server, and let one line smuggle in another command.
_FORBIDDEN = ("\r", "\n", "\0")


class Message:
    """One parsed line: ``prefix`` (``nick!user@host`` or a server name, or ""),
    ``command`` (upper case, or a three-digit numeric), ``params`` (the trailing one last)."""

    __slots__ = ("command", "params", "prefix")

    def __init__(self, prefix: str, command: str, params: list[str]) -> None:
        self.prefix, self.command, self.params = prefix, command, params

    def __repr__(self) -> str:
        return f"Message({self.prefix!r}, {self.command!r}, {self.params!r})"

    @property
    def nick(self) -> str:
        """The sender's nick (or the server's name)."""
        return self.prefix.split("!", 1)[0].split("@", 1)[0]

    @property
    def user_host(self) -> str:
        """``user@host`` of the sender, or "" for a server."""
        _, bang, rest = self.prefix.partition("!")
        return rest if bang and "@" in rest else ""

    def param(self, index: int) -> str:
        return self.params[index] if index < len(self.params) else ""


def parse(line: bytes) -> Message | None:
    """One line, without or with its CR LF. None for an empty line (which RFC 2812 says to
    ignore silently) or one without a command."""
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    if text.startswith("@"):  # IRCv3 tags
        _, _, text = text.partition(" ")
    text = text.lstrip(" ")
    prefix = ""
    if text.startswith(":"):
        prefix, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    head, colon, trailing = text.partition(" :")
    words = [word for word in head.split(" ") if word]  # SPACE only (RFC 2812), not TAB etc.
    if not words:
        return None
    if head.startswith(":"):  # no command, only a trailing parameter
        return None
    command, params = words[0].upper(), words[1:]
    if len(params) >= MAX_PARAMS - 1 and not colon:  # the 15th "middle" takes the rest
        params = [*params[:MAX_PARAMS - 1], " ".join(params[MAX_PARAMS - 1:])]
    if colon:
        params.append(trailing)
    return Message(prefix, command, params)


def encode(command: str, *params: str) -> bytes:
    """One line to send, with CR LF. Every parameter but the last must be one non-empty word;
    the last may hold spaces (it is sent as trailing). ValueError for a CR, LF or NUL anywhere,
    or a line over 512 bytes: callers clean and split text before it gets here."""
    parts = [command]
    for index, param in enumerate(params):
        if any(c in param for c in _FORBIDDEN):
            raise ValueError(f"{command}: a parameter holds CR, LF or NUL")
        # Any blank (not only SPACE) makes a parameter trailing: servers differ in what
        # separates parameters.
        blank = not param or param[0] == ":" or any(c.isspace() for c in param)
        if index == len(params) - 1:
            parts.append(":" + param if blank else param)
        elif blank:
            raise ValueError(f"{command}: middle parameter {param!r} is not one word")
        else:
            parts.append(param)
    data = (" ".join(parts) + "\r\n").encode("utf-8")
    if len(data) > MAX_LINE_BYTES:
        raise ValueError(f"{command}: {len(data)} bytes, over {MAX_LINE_BYTES}")
    return data


# RFC 2812 §2.2: "{}|^" are the lower case of "[]\~" (casemapping "rfc1459").
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


def casefold(name: str) -> str:
    """A nick or channel name as the server compares it."""
    return name.translate(_LOWER)


def is_channel(target: str) -> bool:
    return target[:1] in ("#", "&", "+", "!")


def valid_channel(name: str) -> bool:
    """RFC 2812 §1.3 channel names: a prefix, then no space, comma, BEL, colon; <= 50 chars."""
    return (is_channel(name) and 1 < len(name) <= 50
            and not any(c in name for c in " ,\x07:\r\n\0"))


def valid_nick(nick: str) -> bool:
    """RFC 2812 §2.3.1: a letter or special first, then letters, digits, specials, '-'.
    Length is the server's business (NICKLEN); 30 here keeps lines short."""
    special = "[]\\`_^{|}"
    return (0 < len(nick) <= 30 and nick[0].isascii() and (nick[0].isalpha() or nick[0] in special)
            and all(c.isascii() and (c.isalnum() or c in special or c == "-") for c in nick))
