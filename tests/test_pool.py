"""The worker pool of the long-running front ends (fingerd/pool.py): fair shares, time limits,
bounded threads. Real threads; the loop's side is driven by the test."""

from __future__ import annotations

import threading
import time

from fingerd.pool import Pool
from fingerd.protocol import Query
from fingerd.service import Call


def call(function) -> Call:  # type: ignore[no-untyped-def]
    return Call("test", lambda q: function(), Query("x"), True, 5.0)


def wait(pool: Pool, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)
        pool.collect()


def test_a_source_gets_its_share_and_others_still_get_workers() -> None:
    """One source with many blocked calls holds at most per_source workers; another source's
    call still runs at once."""
    release = threading.Event()
    pool = Pool(lambda: None, workers=4, per_source=2, max_threads=8)
    done: list[str] = []
    for _ in range(6):
        pool.submit("greedy", call(lambda: release.wait(10) and "late"),
                    lambda j: done.append(j.answer))
    pool.submit("other", call(lambda: "quick"), lambda j: done.append(j.answer))
    wait(pool, lambda: "quick" in done)
    assert pool.on_threads.get("greedy") == 2
    release.set()
    wait(pool, lambda: len(done) == 7)
    pool.shutdown()


def test_abandoning_a_job_already_back_changes_nothing() -> None:
    """A job whose result was collected, then abandoned (a time limit that ran out in the same
    turn of the loop), does not count twice: the number of live calls stays right."""
    pool = Pool(lambda: None, workers=2, per_source=2, max_threads=4)
    results: list[object] = []
    job = pool.submit("s", call(lambda: "answer"), lambda j: results.append(j.answer))
    wait(pool, lambda: results == ["answer"])
    assert pool.live == 0
    pool.abandon(job)
    assert pool.live == 0 and not job.abandoned
    pool.shutdown()
