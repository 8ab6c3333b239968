"""The finger service on an asyncio event loop: for the web view and the IRC bot.

:func:`respond` walks a lookup as ``fingerd serve`` does on its own loop: a call that does not
block runs inline, a blocking one on the shared worker pool (fingerd/pool.py, fair per source,
abandoned after ``[server] backend_timeout``). Create one :class:`AsyncPool` per process.
"""

from __future__ import annotations

import asyncio

from fingerd.pool import Pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.pool import Job
    from fingerd.service import FingerService, Reply


class AsyncPool:
    """A :class:`fingerd.pool.Pool` whose threads wake the running asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, **limits: int) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.pool = Pool(self._wake, **limits)

    def _wake(self) -> None:
        """In a worker thread: a job is done."""
        self.loop.call_soon_threadsafe(self.pool.collect)

    def shutdown(self) -> None:
        self.pool.shutdown()


async def respond(service: FingerService, line: bytes, pool: AsyncPool, source: str,
                  remote: str = "") -> Reply:
    """The reply to ``line``. ``source`` is what the pool's fair shares count (a client
    address, an IRC user); ``remote`` is what backends see as the asker (see Query.remote)."""
    lookup = service.lookup(line, remote)
    while (call := lookup.run_until_blocking()) is not None:
        done: asyncio.Future[Job] = pool.loop.create_future()
        job = pool.pool.submit(source, call, done.set_result)
        try:
            await asyncio.wait_for(asyncio.shield(done), call.timeout)
        except TimeoutError:
            if not done.done():  # (else it came back in the same turn of the loop: use it)
                pool.pool.abandon(job)
                lookup.failed(call, TimeoutError(f"took longer than {call.timeout:g} s"))
                continue
        except asyncio.CancelledError:
            pool.pool.abandon(job)  # the client is gone: nobody waits for this answer
            raise
        if job.error is not None:
            lookup.failed(call, job.error)
        else:
            lookup.answered(call, job.answer)
    return lookup.reply_or_error()
