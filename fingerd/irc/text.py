"""What the bot says: answers made safe for IRC and cut to fit its lines. No I/O.

``reply.data`` is already filtered for finger (no control characters but TAB), but the bot
cleans every line it says once more, here, in one function: IRC has its own in-band controls
(bold ``\\x02``, colour ``\\x03NN,NN``, hex colour ``\\x04RRGGBB``, reset ``\\x0f``, monospace
``\\x11``, reverse ``\\x16``, italics ``\\x1d``, strike ``\\x1e``, underline ``\\x1f``, CTCP
``\\x01``) that a finger client would never see as such, and a CR or LF would end the line and
start a command of the sender's choosing.
"""

from __future__ import annotations

_COLOUR, _HEX_COLOUR = "\x03", "\x04"
_HEX = "0123456789abcdefABCDEF"
# C0 (TAB too: it is expanded first), DEL and C1.
_CONTROLS = {c: None for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}


def clean(text: str) -> str:
    """``text`` with IRC formatting (colour digits included), every C0 and C1 control and DEL,
    and Unicode's other unprintable characters (bidi overrides, zero-width joiners) removed;
    TABs expanded to spaces."""
    if _COLOUR in text or _HEX_COLOUR in text:
        text = _strip_colours(text)
    if "\t" in text:
        text = text.expandtabs(8)
    text = text.translate(_CONTROLS)
    if not text.isascii() and not text.isprintable():
        text = "".join(c for c in text if c.isprintable())
    return text


def _strip_colours(text: str) -> str:
    """Remove ``\\x03[N[N][,N[N]]]`` and ``\\x04[RRGGBB[,RRGGBB]]`` with their arguments (the
    control character itself goes with the others)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        out.append(c)
        i += 1
        if c == _COLOUR:
            i = _skip(text, i, "0123456789", 2)
        elif c == _HEX_COLOUR:
            i = _skip(text, i, _HEX, 6)
    return "".join(out)


def _skip(text: str, i: int, digits: str, width: int) -> int:
    """Past ``digits{1,width}`` and, if one follows, ``,digits{1,width}``."""
    start = i
    while i < len(text) and i - start < width and text[i] in digits:
        i += 1
    if i > start and i + 1 < len(text) and text[i] == "," and text[i + 1] in digits:
        i += 1
        start = i
        while i < len(text) and i - start < width and text[i] in digits:
            i += 1
    return i


def split(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` bytes of UTF-8, never inside a character;
    at a space where one is in the last third of the piece, and that space is left out (servers
    such as ngircd trim the ends of a line, so a space at the end of a piece would be lost
    anyway). An empty text gives no piece."""
    if limit < 4:
        raise ValueError("limit must hold a character of UTF-8 (4 bytes)")
    pieces = []
    while len(text.encode("utf-8")) > limit:
        # The longest prefix that fits: at most `limit` characters, fewer for multi-byte ones.
        end = min(len(text), limit)
        while len(text[:end].encode("utf-8")) > limit:
            end -= max(1, (len(text[:end].encode("utf-8")) - limit) // 4)
        space = text.rfind(" ", end * 2 // 3, end + 1)
        if space > 0:
            pieces.append(text[:space])
            text = text[space + 1:]
        else:
            pieces.append(text[:end])
            text = text[end:]
    if text:
        pieces.append(text)
    return pieces


def answer_lines(data: bytes) -> list[str]:
    """A finger answer (CRLF lines) as the lines the bot says: each cleaned, without trailing
    blanks, and without blank lines (IRC has no empty message: servers trim a lone space away
    and refuse the rest, ngircd with 412 "No text to send")."""
    lines = [clean(line).rstrip() for line in data.decode("utf-8", "replace").split("\r\n")]
    return [line for line in lines if line.strip()]
