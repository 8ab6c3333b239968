"""Worker threads for the blocking backend calls of the long-running front ends.

``fingerd serve``, the web view and the IRC bot answer many clients from one process. A backend
that declares ``blocking = False`` (a dictionary look-up) is called inline on their event loop;
every other call (files, the network) runs here, on a worker thread, and its result comes back
to the loop. Three rules keep one slow upstream or one greedy client from stalling everybody:

- **Fair shares.** Calls wait in a queue per source (a client address, an IPv6 /64, an IRC
  user), and are started round-robin across sources; one source has at most ``per_source``
  calls on threads at a time, so the others always get a worker.
- **Time limits.** The front end abandons a call that exceeds ``[server] backend_timeout``
  (counted from submission, so waiting counts) and answers without it. A thread cannot be
  stopped, so the abandoned call keeps its thread until it returns, and keeps counting
  against its source's share; its result is dropped.
- **Bounded threads.** At most ``workers`` calls run that have not been abandoned, except that a
  source with nothing on the threads may always start one; threads stuck in abandoned calls
  are replaced. Never more than ``max_threads`` threads in all.

The loop owns all the bookkeeping; threads only run calls and hand the finished job back
through a queue, then call ``wake`` (an eventfd write, or ``call_soon_threadsafe``), and the
loop calls :meth:`Pool.collect`.
"""

from __future__ import annotations

import queue
import threading
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fingerd.service import Call

WORKERS = 32
PER_SOURCE = 4
MAX_THREADS = 128


class Job:
    """One call submitted for one source, and, once run, its answer or error."""

    __slots__ = ("abandoned", "answer", "call", "collected", "done", "error", "source",
                 "started")

    def __init__(self, source: str, call: Call, done: Callable[[Job], None]) -> None:
        self.source, self.call, self.done = source, call, done
        self.answer: str | None = None
        self.error: BaseException | None = None
        self.started = False  # handed to a thread
        self.collected = False  # its result is back on the loop: nothing left to abandon
        self.abandoned = False  # the front end gave up on it: its result is dropped


class Pool:
    """Runs :class:`Job` s on threads, fairly across sources (see the module docstring)."""

    def __init__(self, wake: Callable[[], None], workers: int = WORKERS,
                 per_source: int = PER_SOURCE, max_threads: int = MAX_THREADS) -> None:
        self.wake = wake
        self.workers, self.per_source, self.max_threads = workers, per_source, max(
            workers, max_threads)
        self.threads = 0
        self.idle = 0
        self.live = 0  # jobs on threads that are not abandoned
        self.on_threads: dict[str, int] = {}  # per source: jobs on threads, abandoned or not
        self.waiting: dict[str, deque[Job]] = {}  # per source, in order; dicts keep the
        # round-robin order: a source that is served moves to the end
        self._ready: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._finished: deque[Job] = deque()

    # -- the loop's side ----------------------------------------------------------------------

    def submit(self, source: str, call: Call, done: Callable[[Job], None]) -> Job:
        """Run ``call`` for ``source``; ``done(job)`` is called from :meth:`collect`."""
        job = Job(source, call, done)
        self.waiting.setdefault(source, deque()).append(job)
        self._dispatch()
        return job

    def abandon(self, job: Job) -> None:
        """The front end gives up on ``job``: never call its ``done``. (A job already back on
        the loop has nothing to give up: its thread is free again.)"""
        if job.abandoned or job.collected:
            return
        job.abandoned = True
        if job.started:
            self.live -= 1
            self._dispatch()  # a worker slot is free again, though its thread is not
        else:
            jobs = self.waiting.get(job.source)
            if jobs is not None:
                jobs.remove(job)
                if not jobs:
                    del self.waiting[job.source]

    def collect(self) -> None:
        """In the loop: finish the jobs that threads have run, then start waiting ones."""
        finished = self._finished
        while finished:
            job = finished.popleft()
            job.collected = True
            self.idle += 1
            count = self.on_threads[job.source] - 1
            if count:
                self.on_threads[job.source] = count
            else:
                del self.on_threads[job.source]
            if not job.abandoned:
                self.live -= 1
                job.done(job)
        self._dispatch()

    def busy(self) -> int:
        """Jobs on threads, abandoned ones included (they still hold a thread)."""
        return self.threads - self.idle

    def shutdown(self) -> None:
        """Let idle threads end; threads in calls end when their call returns."""
        for _ in range(self.threads):
            self._ready.put(None)
        self.waiting.clear()

    def _dispatch(self) -> None:
        while self.waiting:
            if not self.idle and self.threads >= self.max_threads:
                return
            full = self.live >= self.workers
            for source in self.waiting:
                running = self.on_threads.get(source, 0)
                if running < self.per_source and not (full and running):
                    break
            else:
                return  # every waiting source has its share on threads already
            jobs = self.waiting[source]
            job = jobs.popleft()
            del self.waiting[source]
            if jobs:
                self.waiting[source] = jobs  # to the end: round-robin
            self.on_threads[source] = self.on_threads.get(source, 0) + 1
            self.live += 1
            job.started = True
            if self.idle:
                self.idle -= 1
            else:
                self.threads += 1
                threading.Thread(target=self._work, name="fingerd-backend",
                                 daemon=True).start()
            self._ready.put(job)

    # -- the threads' side --------------------------------------------------------------------

    def _work(self) -> None:
        ready, finished, wake = self._ready, self._finished, self.wake
        while (job := ready.get()) is not None:
            try:
                job.answer = job.call.run()
            except BaseException as e:
                job.error = e
            finished.append(job)
            wake()
