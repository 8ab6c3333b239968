"""The ``fingerd irc`` process: read the config, run the client and the bot, handle signals.

SIGHUP rereads the config: the finger service (backends, policy) is replaced for new queries;
new channels are joined and dropped ones left; a changed server, nick or password reconnects.
A broken file is logged and the running configuration kept. SIGTERM and SIGINT send QUIT and
exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from fingerd import log
from fingerd.aio import AsyncPool
from fingerd.backends import service_from
from fingerd.config import load
from fingerd.daemon import UsageError, drop_privileges, notify
from fingerd.irc.bot import FingerBot
from fingerd.irc.client import Client
from fingerd.irc.config import IrcConfig, SecretError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.service import FingerService


def irc(config_path: str | None, user: str | None) -> int:
    """Run the bot until SIGTERM/SIGINT. Returns the exit status (ConfigError: the caller's)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it
    config = load(config_path)
    irc_config = IrcConfig(config.frontends["irc"])
    service = service_from(config)
    try:
        secret = irc_config.secret()  # before dropping privileges: the file may be root's
        drop_privileges(user)
    except (SecretError, UsageError) as e:
        print(f"fingerd irc: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    asyncio.run(_run(config_path, irc_config, service, secret))
    return 0


async def _run(config_path: str | None, irc_config: IrcConfig, service: FingerService,
               secret: str) -> None:
    runner = _Runner(config_path, FingerBot(service, AsyncPool()),
                     irc_config, secret)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, runner.reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runner.stop.set)
    try:
        await runner.run()
    finally:
        runner.bot.pool.shutdown()
        for task in list(runner.bot.tasks):
            task.cancel()


class _Runner:
    """The current client, and the next one when a reload changed the connection settings."""

    def __init__(self, config_path: str | None, bot: FingerBot, irc_config: IrcConfig,
                 secret: str) -> None:
        self.config_path, self.bot = config_path, bot
        self.client = Client(irc_config, secret, bot.on_message)
        self.next: Client | None = None
        self.stop = asyncio.Event()  # the process stops
        self.client_stop = asyncio.Event()  # the current client stops

    async def run(self) -> None:
        while not self.stop.is_set():
            self.client_stop = asyncio.Event()
            follow = asyncio.create_task(self._follow())
            await self.client.run(self.client_stop)
            follow.cancel()
            if self.next is not None:
                self.next.ready = self.client.ready
                self.client, self.next = self.next, None
        notify("STOPPING=1")
        log.send("irc: stopped")

    async def _follow(self) -> None:
        await self.stop.wait()
        self.client_stop.set()

    def reload(self) -> None:
        """SIGHUP: on any error, keep everything as it is."""
        client = self.client
        try:
            config = load(self.config_path)
            irc_config = IrcConfig(config.frontends["irc"])
            service = service_from(config)
            same = irc_config.connection() == client.config.connection()
            secret = client.secret if same else irc_config.secret()
        except Exception as e:  # a ConfigError, a SecretError, whatever a plugin raises
            log.error(f"irc: reload failed, keeping the running configuration: {e}")
            return
        self.bot.service = service
        if same:
            client.apply(irc_config)
        else:
            log.send("irc: connection settings changed: reconnecting")
            self.next = Client(irc_config, secret, self.bot.on_message)
            self.client_stop.set()
        log.send(f"irc: configuration reloaded from {service.path}")
