"""How backend calls run in a process that answers one query: under an alarm.

The service (fingerd/service.py) decides *which* backend to ask; a runner decides *how* the
call runs and for how long. Front ends choose their runner:

- the per-connection handler and ``fingerd query``: :func:`alarm_runner`, here. One process,
  one thread, one query: the call runs right here, and ``SIGALRM`` interrupts it after
  ``[server] backend_timeout`` seconds by raising inside it (the backend contract allows that);
- the long-running front ends (``fingerd serve``, the web view, the IRC bot): non-blocking calls
  inline on their event loop, blocking ones on the shared worker pool, fingerd/pool.py.

On the per-connection hot path: ``_signal`` is built into the interpreter (``signal`` would
import ``enum``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from collections.abc import Callable
    from typing import TypeVar

    from fingerd.service import Call

    T = TypeVar("T")
else:
    import _signal


class _Alarm(BaseException):
    """Raised by the SIGALRM handler inside whatever ran too long. Not an Exception, so that a
    backend's own ``except Exception`` cannot swallow it and run on."""


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def with_alarm(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, interrupted after ``seconds`` with a TimeoutError ("took longer than N s")."""
    _signal.signal(_signal.SIGALRM, _raise_alarm)
    try:
        try:
            # Armed inside the try: a timer that fires before fn() starts (a tiny limit, a
            # loaded machine) raises here, and must become the TimeoutError too.
            _signal.setitimer(_signal.ITIMER_REAL, seconds)
            return fn()
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _Alarm:  # also when it fired just as fn() returned, before the disarm
        raise TimeoutError(f"took longer than {seconds:g} s") from None


def alarm_runner(call: Call) -> str | None:
    """Run ``call`` in this thread within its time limit (the main thread only: signals)."""
    return with_alarm(call.timeout, call.run)
