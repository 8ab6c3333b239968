"""An IRC client that behaves like a person, for the bot's tests (standard library only).

The network tests drive it from pytest; the end-to-end test copies it into the container and
runs it there with Debian's python3:

    python3 irc_person.py ask HOST PORT NICK CHANNEL TEXT BOT [PASSWORD]
        join CHANNEL, say TEXT there, print the bot's lines (JSON) until it is quiet

It parses lines on its own, not with fingerd.irc.message, so that a bug there cannot hide
itself. Every wait has a deadline; it answers the server's PINGs.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import time
from collections.abc import Callable


class Line:
    """One line from the server: ``prefix``, ``command``, ``params`` (trailing last), ``when``
    (time.monotonic() on arrival) and the ``raw`` bytes as received."""

    def __init__(self, raw: bytes, when: float) -> None:
        self.raw, self.when = raw, when
        text = raw.decode("utf-8", "replace")
        self.prefix = ""
        if text.startswith(":"):
            self.prefix, _, text = text[1:].partition(" ")
        head, colon, trailing = text.partition(" :")
        words = head.split()
        self.command = words[0].upper() if words else ""
        self.params = words[1:] + ([trailing] if colon else [])

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def text(self) -> str:
        return self.params[-1] if self.params else ""

    def __repr__(self) -> str:
        return f"Line({self.raw!r})"


class Person:
    """One registered client on a socket the caller connected."""

    def __init__(self, sock: socket.socket, nick: str, timeout: float = 15.0,
                 password: str = "") -> None:
        self.sock, self.nick = sock, nick
        self.buffer = b""
        self.seen: list[Line] = []  # every line, in order
        self.unread: list[Line] = []  # lines not yet returned by expect()
        self.closed = False
        sock.setblocking(False)
        if password:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :a person")
        welcome = self.expect(lambda m: m.command in ("001", "433", "ERROR"), timeout)
        if welcome.command != "001":
            raise RuntimeError(f"{nick} could not register: {welcome.raw!r}")

    def send(self, line: str) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        self.sock.setblocking(False)

    def say(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def join(self, channel: str, timeout: float = 15.0) -> None:
        self.send(f"JOIN {channel}")
        self.expect(lambda m: m.command == "366" and m.params[1:2] == [channel], timeout)

    def _read(self, timeout: float) -> None:
        """Read what is there (waiting at most ``timeout``), answer PINGs."""
        if self.closed:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        self.buffer += data
        now = time.monotonic()
        while b"\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = Line(raw.rstrip(b"\r"), now)
            if line.command == "PING":
                self.send("PONG :" + line.text)
            self.seen.append(line)
            self.unread.append(line)

    def expect(self, match: Callable[[Line], bool], timeout: float = 15.0) -> Line:
        """The first unread line that matches (lines before it stay unread); AssertionError
        with what came instead after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for index, line in enumerate(self.unread):
                if match(line):
                    del self.unread[index]
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.closed and not self.buffer):
                raise AssertionError(f"{self.nick}: nothing matched in {timeout} s; got "
                                     f"{[line.raw for line in self.unread][-20:]}")
            self._read(min(left, 0.5))

    def collect(self, match: Callable[[Line], bool], quiet: float,
                limit: float = 60.0) -> list[Line]:
        """Every unread matching line until none has come for ``quiet`` seconds (or ``limit``
        seconds in all)."""
        got: list[Line] = []
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            self._read(0.1)
            keep = []
            for line in self.unread:
                if match(line):
                    got.append(line)
                    last = time.monotonic()
                else:
                    keep.append(line)
            self.unread = keep
        return got

    def from_bot(self, bot: str, command: str = "PRIVMSG") -> Callable[[Line], bool]:
        return lambda m: m.command == command and m.nick.lower() == bot.lower()

    def quit(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :bye")
        self.sock.close()


def main(argv: list[str]) -> int:
    if len(argv) not in (8, 9) or argv[1] != "ask":
        print(__doc__, file=sys.stderr)
        return 2
    host, port, nick, channel, text, bot = argv[2], int(argv[3]), argv[4], argv[5], argv[6], \
        argv[7]
    password = argv[8] if len(argv) == 9 else ""
    person = Person(socket.create_connection((host, port), timeout=10), nick,
                    password=password)
    person.join(channel)
    person.say(channel, text)
    first = person.expect(person.from_bot(bot), 30)
    rest = person.collect(person.from_bot(bot), quiet=3)
    print(json.dumps([line.text for line in (first, *rest)]))
    person.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
