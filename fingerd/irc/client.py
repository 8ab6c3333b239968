"""The IRC connection on asyncio: connect, register, stay connected, send through flood control.

One :class:`Client` keeps one server connection alive for as long as it runs: it connects (TLS
verified by default), registers (server password or SASL PLAIN when configured; an alternate
nick when its own is taken, and the own one back when it comes free), joins its channels, answers
the server's PINGs and checks on a silent server with its own, and after any loss reconnects
with exponential backoff (capped, with jitter) and joins again. Everything it sends goes
through the outbox and the token bucket (fingerd/irc/flood.py). What people say is handed to
``on_message``; the client itself knows nothing of finger. (A little over 350 lines: one
connection's whole life, from connecting to QUIT, reads best in one place.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import ssl
import time

from fingerd import log
from fingerd.daemon import notify
from fingerd.irc.flood import Outbox, TokenBucket
from fingerd.irc.message import MAX_LINE_BYTES, Message, casefold, encode, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fingerd.irc.config import IrcConfig

CONNECT_TIMEOUT = 30.0  # connecting, TLS included
REGISTER_TIMEOUT = 60.0  # from connected to the welcome (001)
IDLE_PING = 120.0  # a server silent this long is asked for a PONG...
IDLE_DROP = 60.0  # ...and dropped when it stays silent this much longer
STABLE = 60.0  # a connection that lasted this long resets the backoff
FIRST_DELAY = 2.0  # the first reconnect delay, doubled after each failure
REGAIN_INTERVAL = 60.0  # how often to try for the own nick while under an alternate
REGAIN_SPACING = 5.0  # and never more often than this, whatever the holder of it does
REJOIN_DELAY = 15.0  # after a KICK
READY_WAIT = 10.0  # from the welcome: ready even if some channel never answers
MAX_LINE_READ = 8192 + MAX_LINE_BYTES  # IRCv3 tags may precede a 512-byte message
MAX_QUEUED_LINES = 1000
MAX_LINES_PER_ASKER = 200
HOST_RESERVE = 63  # until the server shows us our host: the longest a host name label gets
# Numerics: RFC 2812 §5, and IRCv3 SASL (900-908).
NICK_TAKEN = {"432", "433", "436", "437"}
JOIN_FAILED = {"403", "405", "471", "473", "474", "475", "476", "477", "489"}
SASL_FAILED = {"902", "904", "905", "906", "908"}


class Client:
    """One IRC identity on one server. ``on_message(client, message)`` gets every PRIVMSG and
    NOTICE (and must not block)."""

    def __init__(self, config: IrcConfig, secret: str,
                 on_message: Callable[[Client, Message], None]) -> None:
        self.config, self.secret, self.on_message = config, secret, on_message
        self.outbox = Outbox(MAX_QUEUED_LINES, MAX_LINES_PER_ASKER)
        self.bucket = TokenBucket(config.send_burst, config.send_interval, time.monotonic())
        self.wake = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.nick = config.nick
        self.prefix_bytes = 0  # of ":nick!user@host ", as the server relays our lines
        self.registered = False
        self.joined: set[str] = set()  # casefolded channel names we are in
        self.answered: set[str] = set()  # channels joined or refused, this connection
        self.ready = False  # READY=1 sent to systemd (once per process)
        self.stopping = False
        self._candidates: list[str] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._regain_timer: asyncio.TimerHandle | None = None
        self._regained_at = -REGAIN_SPACING

    # -- what the bot uses --------------------------------------------------------------------

    def text_budget(self, command: str, target: str) -> int:
        """Bytes left for the text of ``COMMAND target :text`` once the server has put our
        prefix in front of it to relay it (RFC 2812's 512 bytes, CR LF included)."""
        prefix = self.prefix_bytes or (len(f":{self.nick}!~{self.config.user}@ ")
                                       + HOST_RESERVE)
        return MAX_LINE_BYTES - prefix - len(f"{command} {target} :\r\n".encode())

    def send(self, line: bytes) -> None:
        """A control line: ahead of every answer."""
        self.outbox.put_control(line)
        self.wake.set()

    def say(self, asker: str, lines: list[bytes]) -> int:
        """Queue answer lines for ``asker``; returns how many did not fit."""
        dropped = self.outbox.put(asker, lines)
        self.wake.set()
        return dropped

    def apply(self, config: IrcConfig) -> None:
        """A reloaded config with the same connection settings: new channels, limits."""
        old = {casefold(c) for c in self.config.channels}
        new = {casefold(c) for c in config.channels}
        self.config = config
        self.bucket.burst, self.bucket.interval = config.send_burst, config.send_interval
        if self.registered:
            for channel in config.channels:
                if casefold(channel) not in old:
                    self.send(encode("JOIN", channel))
            for channel in old - new:
                if channel in self.joined:
                    self.send(encode("PART", channel, "configuration changed"))

    # -- the connection's life ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set; then QUIT and return."""
        delay = FIRST_DELAY
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
            except (OSError, EOFError, TimeoutError, ssl.SSLError, ValueError,
                    asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                log.warning(f"irc: {self.config.server}:{self.config.port}: {_reason(e)}")
            finally:
                self._reset()
            if stop.is_set():
                break
            if time.monotonic() - started >= STABLE:
                delay = FIRST_DELAY
            wait = min(delay, self.config.reconnect_max_delay) * random.uniform(0.8, 1.0)  # noqa: S311
            delay = min(delay * 2, self.config.reconnect_max_delay)
            self._ready(f"reconnecting in {wait:.0f} s")
            log.send(f"irc: reconnecting in {wait:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _session(self, stop: asyncio.Event) -> None:
        config = self.config
        context = None
        if config.tls:
            context = ssl.create_default_context(cafile=config.ca_file or None)
        log.send(f"irc: connecting to {config.server}:{config.port}"
                 f"{' (TLS)' if config.tls else ''}")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            config.server, config.port, ssl=context, limit=MAX_LINE_READ,
            server_hostname=config.server if context else None), CONNECT_TIMEOUT)
        self.writer = writer
        tasks = [asyncio.create_task(self._sender(writer)),
                 asyncio.create_task(self._read(reader)),
                 asyncio.create_task(stop.wait())]
        try:
            self._register()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not tasks[2]:
                    task.result()  # the error that ended the connection
            if not tasks[0].done():  # stopping: say goodbye, briefly
                self.outbox.clear()
                self.send(encode("QUIT", "fingerd stopping"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(), 2.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Handle what the server says until it goes away or falls silent."""
        deadline = time.monotonic() + REGISTER_TIMEOUT
        pinged = False
        while True:
            timeout = IDLE_DROP if pinged else IDLE_PING
            if not self.registered:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError("no welcome from the server")
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
            except TimeoutError:
                if pinged or not self.registered:
                    raise TimeoutError("the server went silent") from None
                pinged = True
                self.send(encode("PING", "keepalive"))
                continue
            pinged = False
            message = parse(line)
            if message is not None:
                self._handle(message)

    async def _drained(self) -> None:
        while len(self.outbox):
            await asyncio.sleep(0.05)

    async def _sender(self, writer: asyncio.StreamWriter) -> None:
        """Send queued lines as the bucket allows: control lines at once, the rest in turn."""
        outbox, bucket, wake = self.outbox, self.bucket, self.wake
        while True:
            if not len(outbox):
                wake.clear()
                await wake.wait()
                continue
            if not outbox.control:
                wait = bucket.wait(time.monotonic())
                if wait > 0:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
                    continue
            line = outbox.pop()
            assert line is not None
            bucket.take(time.monotonic())
            writer.write(line)
            await writer.drain()

    def _reset(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._regain_timer = None
        self.outbox.clear()
        self.registered = False
        self.joined.clear()
        self.answered.clear()
        self.prefix_bytes = 0
        self.writer = None

    def _ready(self, status: str) -> None:
        """Tell systemd: ready once (Type=notify), and what we are doing now."""
        if not self.ready:
            self.ready = True
            notify(f"READY=1\nSTATUS={status}")
        else:
            notify(f"STATUS={status}")

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timers = [t for t in self._timers if t.when() > now]  # drop the fired ones
        self._timers.append(loop.call_later(delay, callback))

    # -- registration and nicks ---------------------------------------------------------------

    def _register(self) -> None:
        config = self.config
        self._candidates = [config.nick, *config.alt_nicks,
                            *(config.nick + "_" * n for n in (1, 2, 3))]
        if self.secret and config.sasl_username:
            self.send(encode("CAP", "REQ", "sasl"))
        elif self.secret:
            self.send(encode("PASS", self.secret))
        self._next_nick()
        self.send(encode("USER", config.user, "0", "*", config.realname))

    def _next_nick(self) -> None:
        if self._candidates:
            self.nick = self._candidates.pop(0)
        else:  # every configured nick is taken: the own one with three digits
            self.nick = f"{self.config.nick[:26]}{random.randrange(1000):03}"  # noqa: S311
        self.send(encode("NICK", self.nick))

    def _regain(self) -> None:
        """Under an alternate nick: ask for the own one (the server says 433 if still taken),
        at most once every REGAIN_SPACING seconds however often its holder comes and goes,
        and again every REGAIN_INTERVAL from one timer, never a second one."""
        if not self.registered or casefold(self.nick) == casefold(self.config.nick):
            return
        now = time.monotonic()
        due = self._regained_at + REGAIN_SPACING
        if now >= due:
            self._regained_at = now
            self.send(encode("NICK", self.config.nick))
            due = now + REGAIN_INTERVAL
        loop = asyncio.get_running_loop()
        when = loop.time() + (due - now)
        timer = self._regain_timer
        if timer is None or timer.when() <= loop.time() or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._regain_timer = loop.call_at(when, self._regain)
            self._timers.append(self._regain_timer)

    def _welcome(self, message: Message) -> None:
        self.registered = True
        self.nick = message.param(0) or self.nick
        log.send(f"irc: registered on {self.config.server} as {self.nick}")
        for channel in self.config.channels:
            self.send(encode("JOIN", channel))
        if casefold(self.nick) != casefold(self.config.nick):
            self._regain_timer = None
            self._regained_at = time.monotonic()  # it just asked for it, at registration
            self._regain()
        self._later(READY_WAIT, self._status)
        self._status()

    def _status(self) -> None:
        if not self.registered:
            return
        channels = {casefold(c) for c in self.config.channels}
        if channels <= self.answered or self.ready:
            joined = ", ".join(sorted(self.joined)) or "no channel"
            self._ready(f"connected to {self.config.server} as {self.nick}, in {joined}")

    # -- what the server says -----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        command = message.command
        mine = casefold(message.nick) == casefold(self.nick)
        if command == "PING":
            self.send(encode("PONG", message.param(0) or self.config.server))
        elif command in ("PRIVMSG", "NOTICE"):
            if message.user_host:
                self.on_message(self, message)
        elif command == "001":
            self._welcome(message)
        elif command in NICK_TAKEN:
            if not self.registered:
                self._next_nick()
        elif command == "JOIN" and mine:
            channel = casefold(message.param(0))
            log.send(f"irc: joined {message.param(0)}")
            self.joined.add(channel)
            self.answered.add(channel)
            # Now we know how the server names us when it relays what we say.
            self.prefix_bytes = len(f":{message.prefix} ".encode())
            self._status()
        elif command in JOIN_FAILED and self.registered:
            log.warning(f"irc: cannot join {message.param(1)!r}: {message.param(-1)}")
            self.answered.add(casefold(message.param(1)))
            self._status()
        elif command == "KICK" and casefold(message.param(1)) == casefold(self.nick):
            channel = message.param(0)
            self.joined.discard(casefold(channel))
            log.warning(f"irc: kicked from {channel} by {message.nick}: {message.param(2)}")
            self._later(REJOIN_DELAY, lambda: self.send(encode("JOIN", channel)))
        elif command == "PART" and mine:
            self.joined.discard(casefold(message.param(0)))
        elif command == "NICK":
            if mine:
                self.nick = message.param(0)
                log.send(f"irc: now known as {self.nick}")
                self._status()
            elif casefold(message.nick) == casefold(self.config.nick):
                self._regain()  # our own nick just came free
        elif command == "QUIT" and casefold(message.nick) == casefold(self.config.nick):
            self._regain()
        elif command == "ERROR":
            log.warning(f"irc: the server says: {message.param(0)}")
        elif command in ("CAP", "AUTHENTICATE", "903") or command in SASL_FAILED:
            self._sasl(message)

    def _sasl(self, message: Message) -> None:
        """SASL PLAIN (IRCv3 sasl-3.1): CAP REQ sasl, AUTHENTICATE PLAIN, the credentials in
        base64 (in 400-byte pieces), then CAP END whatever the outcome."""
        command, sub = message.command, message.param(1).upper()
        if command == "CAP" and sub == "ACK" and "sasl" in message.param(-1).split():
            self.send(encode("AUTHENTICATE", "PLAIN"))
        elif command == "CAP" and sub == "NAK":
            log.error("irc: the server does not offer SASL; continuing without logging in")
            self.send(encode("CAP", "END"))
        elif command == "AUTHENTICATE" and message.param(0) == "+":
            user = self.config.sasl_username
            blob = base64.b64encode(f"{user}\0{user}\0{self.secret}".encode()).decode()
            pieces = [blob[i:i + 400] for i in range(0, len(blob), 400)]
            if len(pieces[-1]) == 400:
                pieces.append("+")
            for piece in pieces:
                self.send(encode("AUTHENTICATE", piece))
        elif command == "903":
            log.send(f"irc: logged in as {self.config.sasl_username} (SASL)")
            self.send(encode("CAP", "END"))
        elif command in SASL_FAILED:
            log.error(f"irc: SASL login as {self.config.sasl_username} failed "
                      f"({command} {message.param(-1)}); continuing without logging in")
            self.send(encode("CAP", "END"))


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message}"
    text = getattr(error, "strerror", None) or str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
