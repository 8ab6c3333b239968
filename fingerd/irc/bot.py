"""The finger bot: what people say on IRC in, the finger service's answer out.

- In a channel, ``!finger NAME`` (the ``prefix``, a word of its own) asks for NAME and ``!finger``
  alone for the user list; the answer goes to the channel, at most ``channel_lines`` lines, then
  ``(more: /msg BOT NAME)``. ``!finger -l NAME`` is the long form (``/W``).
- In a private message, ``NAME``, ``finger NAME`` or ``!finger NAME`` is answered in private,
  the whole answer (the service caps it at ``[server] max_answer_bytes``).
- The query line is built from those words and the finger service parses it with its own grammar
  (so ``user@host`` is a forwarding request, refused unless ``[server] forwarding``): the bot
  answers exactly what finger answers, as IRC lines (fingerd/irc/text.py).
- NOTICEs are never answered (RFC 2812 §3.3.2: automatic replies must never be answered);
  of CTCP only VERSION and PING are, by NOTICE; other CTCP (ACTION, DCC, ...) is ignored.
- One asker (``user@host``) has at most two queries being looked up and ten lines waiting;
  beyond that it gets one notice (at most one a minute) and its queries are dropped, so that
  nobody can fill the bot's queue or starve the others.
"""

from __future__ import annotations

import asyncio
import time

from fingerd import __version__, log
from fingerd.aio import AsyncPool, respond
from fingerd.irc.message import casefold, encode, is_channel
from fingerd.irc.text import answer_lines, clean, split
from fingerd.service import BUSY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.irc.client import Client
    from fingerd.irc.message import Message
    from fingerd.service import FingerService

MAX_LOOKUPS_PER_ASKER = 2
MAX_WAITING_LINES_PER_ASKER = 10
NOTICE_INTERVAL = 60.0  # seconds between two rate-limit notices to one asker
RATE_LIMITED = "Too many questions at once; ask again when your answers are out."
BUSY_TEXT = "Too many questions from everybody at once; ask again in a minute."


class FingerBot:
    """Answers finger queries on IRC from ``service`` (replaced on SIGHUP)."""

    def __init__(self, service: FingerService, pool: AsyncPool) -> None:
        self.service, self.pool = service, pool
        self.lookups: dict[str, int] = {}  # per asker: queries being looked up
        self.noticed: dict[str, float] = {}  # per asker: when it was last told to slow down
        self.tasks: set[asyncio.Task[None]] = set()

    def on_message(self, client: Client, message: Message) -> None:
        try:
            self._message(client, message)
        except Exception as e:  # a bug: logged, and the connection goes on
            log.error(f"irc: internal error on {message!r}: {type(e).__name__}: {e}")

    def _message(self, client: Client, message: Message) -> None:
        if message.command != "PRIVMSG" or len(message.params) < 2:
            return  # NOTICE: never answered
        if casefold(message.nick) == casefold(client.nick):
            return
        target, text = message.params[0], message.params[1]
        asker = message.user_host.lower()
        if text.startswith("\x01"):
            self._ctcp(client, message, asker, text.strip("\x01"))
            return
        words = text.split()
        channel = target if is_channel(target) else ""
        if channel:
            if not words or words[0] != client.config.prefix:
                return
            words = words[1:]
        elif words and words[0].lower() in ("finger", client.config.prefix.lower()):
            words = words[1:]
        verbose = bool(words) and words[0] in ("-l", "/W", "/w")
        if verbose:
            words = words[1:]
        asked = " ".join(words)
        line = ("/W " if verbose else "") + asked
        reply_to = channel or message.nick
        if not self._admit(client, message, asker, line, channel):
            return
        self.lookups[asker] = self.lookups.get(asker, 0) + 1
        task = asyncio.create_task(self._answer(client, message, asker, line, reply_to,
                                                channel, asked))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _admit(self, client: Client, message: Message, asker: str, line: str,
               channel: str) -> bool:
        """One asker may not have too much going on, and the bot not too much in all."""
        if (self.lookups.get(asker, 0) < MAX_LOOKUPS_PER_ASKER
                and client.outbox.queued(asker) < MAX_WAITING_LINES_PER_ASKER
                and client.outbox.admit(asker, client.config.channel_lines + 1)):
            return True
        log.query_record(message.prefix, line, None, "", BUSY, 0.0, frontend="irc",
                         IRC_CHANNEL=channel or None)
        now = time.monotonic()
        if len(self.noticed) > 1000:  # who was told more than an interval ago can be told again
            self.noticed = {who: when for who, when in self.noticed.items()
                            if now - when < NOTICE_INTERVAL}
        if now - self.noticed.get(asker, -NOTICE_INTERVAL) >= NOTICE_INTERVAL:
            self.noticed[asker] = now
            text = RATE_LIMITED if client.outbox.queued(asker) or self.lookups.get(asker) \
                else BUSY_TEXT
            client.say(asker, [encode("NOTICE", message.nick, text)])
        return False

    async def _answer(self, client: Client, message: Message, asker: str, line: str,
                      reply_to: str, channel: str, asked: str) -> None:
        started = time.monotonic()
        try:
            reply = await respond(self.service, line.encode("utf-8") + b"\r\n", self.pool,
                                  asker, remote="")
        finally:
            self.lookups[asker] -= 1
            if not self.lookups[asker]:
                del self.lookups[asker]
        lines = answer_lines(reply.data)
        if channel:
            limit = client.config.channel_lines
            if len(lines) > limit:
                again = clean(("-l " if line.startswith("/W ") else "") + asked) or "finger"
                lines = [*lines[:limit], f"(more: /msg {client.nick} {again})"]
        # In a channel the answer is said there; in private it is a NOTICE, as RFC 2812 §3.3.2
        # asks of automatic replies, so that no other program answers it, and two bots that
        # each answer what they are told cannot talk to each other forever.
        command = "PRIVMSG" if channel else "NOTICE"
        budget = client.text_budget(command, reply_to)
        out = [encode(command, reply_to, piece)
               for text in lines for piece in split(text, budget)]
        dropped = client.say(asker, out)
        if dropped:
            log.warning(f"irc: the answer to {message.nick} was cut: {dropped} lines did not "
                        "fit in the queue")
        query = reply.query
        log.query_record(message.prefix, query.text() if query else line,
                         query.user if query else None, reply.backend, reply.outcome,
                         time.monotonic() - started, frontend="irc",
                         IRC_CHANNEL=channel or None)

    def _ctcp(self, client: Client, message: Message, asker: str, text: str) -> None:
        """CTCP VERSION and PING are answered by NOTICE, as CTCP asks; the rest is ignored."""
        command, _, argument = text.partition(" ")
        command = command.upper()
        if command == "VERSION":
            reply = f"VERSION fingerd {__version__}"
        elif command == "PING":
            reply = f"PING {clean(argument)[:64]}".rstrip()
        else:
            return
        if client.outbox.queued(asker) < MAX_WAITING_LINES_PER_ASKER:
            client.say(asker, [encode("NOTICE", message.nick, f"\x01{reply}\x01")])
