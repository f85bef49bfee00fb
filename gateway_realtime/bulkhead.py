"""The bulkhead: how many Gateway calls one process makes at once.

A stalled Gateway must never hold every thread of a process, so a process
makes at most ``bulkhead_size()`` Gateway calls at once (one fewer than its
request threads by default). A mint that finds them all taken does not give
up at once: bursts within capacity are normal (the threads of one process
are not shared evenly by the users of a site), so it waits in line for the
next call to end, for about the Gateway's recent latency
(``GATEWAY_REALTIME_BULKHEAD_WAIT``: twice that latency, at least 0.1 s). A
healthy Gateway, however slow, ends
a call within that; a stalled one does not, and then the waiting mint is
refused with ``GatewayBusy`` and so is every mint after it at once, until a
call ends again. So a stall costs the rest of the site one short wait, and
a slow Gateway costs it nothing but its own latency.

The process also learns the Gateway's latency here: the recent latency
(an average of the calls the Gateway answered) sizes the wait, and the slow
line (``slow_call_threshold``): a call slower than that counts against the
circuit breaker, and after a call that ran out of time the next one gets
that line as its deadline, so that a stall holds a sync worker one whole
deadline, then short ones. Both follow the Gateway's own latency, so a
Gateway that is slow all the time is never cut short.

Everything here is per process (a forked worker starts afresh, through
``os.register_at_fork``) and guarded by one lock: no cache, no I/O.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.core.handlers.asgi import ASGIRequest

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayBusy

if TYPE_CHECKING:
    from django.http import HttpRequest

#: The most Gateway calls a process makes at once when MAX_CONCURRENT_MINTS is None.
AUTO_MAX_CONCURRENT_MINTS = 4
#: How much a new answer moves the recent latency (an exponentially weighted
#: average): quickly up, so a Gateway that got slower is waited for after an
#: answer or two; slowly down, so one quick answer does not make a slow
#: Gateway's calls look late.
LATENCY_WEIGHT_UP = 0.5
LATENCY_WEIGHT_DOWN = 0.1
#: With BULKHEAD_WAIT None: wait this many times the recent latency...
AUTO_WAIT_FACTOR = 2.0
#: ...and never less than this (seconds), nor more than the whole deadline.
AUTO_WAIT_MIN = 0.1
#: The latency assumed before the process's first answer (seconds).
LATENCY_PRIOR = 0.5


def request_threads() -> int | None:
    """How many threads serve requests beside this one in this process, as far as it can see.

    A server's main thread (gunicorn's sync workers, say) is one thread. A
    thread of a ``concurrent.futures.ThreadPoolExecutor`` (gunicorn's gthread
    workers, asgiref's executor for sync views under ASGI) is one of the pool
    its name prefix names (``<prefix>_<n>``, the documented naming): the
    pool's threads alive now. Anything else (``None``) is not known.
    """
    current = threading.current_thread()
    if current is threading.main_thread():
        return 1
    prefix, separator, index = current.name.rpartition("_")
    if not separator or not prefix or not index.isdigit():
        return None
    return sum(1 for thread in threading.enumerate() if thread.name.rpartition("_")[0] == prefix)


def bulkhead_size(request: HttpRequest | None = None) -> int:
    """``MAX_CONCURRENT_MINTS``, or with None one fewer than the request threads (1 to 4).

    So that a stalled Gateway leaves a thread of every process to pages and
    to refusals: gthread with 4 threads mints 3 at once, with 2 threads one,
    a sync worker one. Under ASGI each request's sync code has a thread of its
    own and the event loop serves the rest, so the bound is 4.
    """
    size = app_settings.MAX_CONCURRENT_MINTS
    if size is not None:
        return size
    if isinstance(request, ASGIRequest):
        return AUTO_MAX_CONCURRENT_MINTS
    threads = request_threads()
    if threads is None:
        return AUTO_MAX_CONCURRENT_MINTS
    return max(1, min(AUTO_MAX_CONCURRENT_MINTS, threads - 1))


class _Waiter:
    __slots__ = ("granted", "ready")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.granted = False


class Bulkhead:
    """One process's Gateway calls in flight, the mints waiting for one, and the latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self._size = 1
        self._waiting: deque[_Waiter] = deque()
        # A mint waited its whole time and no call ended meanwhile: the
        # Gateway is not answering, so the next ones are refused at once
        # until a call ends.
        self._starved = False
        #: The recent latency of the Gateway's answers (seconds), None before the first.
        self.latency: float | None = None
        #: Whether this process's last finished call ran out of time.
        self.last_call_timed_out = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def wait_bound(self) -> float:
        """How long a mint waits for a call to end (``BULKHEAD_WAIT``, or derived)."""
        configured = app_settings.BULKHEAD_WAIT
        if configured is not None:
            return configured
        latency = LATENCY_PRIOR if self.latency is None else self.latency
        return min(app_settings.TOTAL_TIMEOUT, max(AUTO_WAIT_MIN, AUTO_WAIT_FACTOR * latency))

    def slow_call_threshold(self) -> float:
        """The slow line: ``SLOW_CALL_FACTOR`` times the recent latency, at least
        ``SLOW_CALL_MIN``, at most ``TOTAL_TIMEOUT`` (which it is before any answer)."""
        total = app_settings.TOTAL_TIMEOUT
        if self.latency is None:
            return total
        line = max(app_settings.SLOW_CALL_MIN, app_settings.SLOW_CALL_FACTOR * self.latency)
        return min(total, line)

    def deadline(self, requested: float | None) -> float | None:
        """The deadline of the next call: the caller's, cut to the slow line after a time-out."""
        if not self.last_call_timed_out:
            return requested
        line = self.slow_call_threshold()
        return line if requested is None else min(requested, line)

    def enter(self, size: int) -> int:
        """Take a call of ``size``, waiting in line if need be; how many others were in flight.

        Raises ``GatewayBusy`` when none ends within ``wait_bound()``, at once
        while the Gateway is known not to be answering, and at once when
        ``size`` mints already wait.
        """
        waiter = _Waiter()
        with self._lock:
            # The size may have grown (a thread pool still starting its
            # threads, a changed setting): let those in line in first.
            self._size = size
            self._grant()
            if self.in_flight < size and not self._waiting:
                self.in_flight += 1
                return self.in_flight - 1
            bound = self.wait_bound()
            if self._starved or bound <= 0 or len(self._waiting) >= size:
                raise _busy()
            self._waiting.append(waiter)
        waiter.ready.wait(bound)
        with self._lock:
            if waiter.granted:
                return self.in_flight - 1
            self._waiting.remove(waiter)
            self._starved = True
        raise _busy()

    def leave(self, *, answered_in: float | None = None, timed_out: bool = False) -> None:
        """End a call: hand it to the first mint in line, and learn from its outcome.

        ``answered_in``: seconds the Gateway took to answer, when it did
        (any status); ``timed_out``: the call ran out of time.
        """
        with self._lock:
            self._starved = False
            if answered_in is not None:
                self.last_call_timed_out = False
                if self.latency is None:
                    self.latency = answered_in
                else:
                    change = answered_in - self.latency
                    weight = LATENCY_WEIGHT_UP if change > 0 else LATENCY_WEIGHT_DOWN
                    self.latency += weight * change
            elif timed_out:
                self.last_call_timed_out = True
            self.in_flight -= 1
            self._grant()

    def _grant(self) -> None:
        """Give the free calls to those in line, first come first served (lock held)."""
        while self._waiting and self.in_flight < self._size:
            waiter = self._waiting.popleft()
            waiter.granted = True
            self.in_flight += 1
            waiter.ready.set()


def _busy() -> GatewayBusy:
    return GatewayBusy(
        "Too many client secrets are being minted at once "
        "(GATEWAY_REALTIME_MAX_CONCURRENT_MINTS); try again in a moment.",
        retry_after=1,
    )


_bulkhead = Bulkhead()


def reset() -> None:
    """Forget this process's calls, line and latency (a new ``Bulkhead``).

    Run in a forked child (gunicorn ``--preload``), whose parent's lock may
    have been held while forking; tests call it between tests.
    """
    global _bulkhead
    _bulkhead = Bulkhead()


os.register_at_fork(after_in_child=reset)


def process_bulkhead() -> Bulkhead:
    """This process's bulkhead."""
    return _bulkhead


class CallSlot:
    """One Gateway call's place in the bulkhead (``gateway_call_slot``)."""

    def __init__(self, bulkhead: Bulkhead, others: int) -> None:
        self.bulkhead = bulkhead
        #: How many other calls of this process were in flight when it was taken.
        self.others = others
        self._started: float | None = None
        self._answered_in: float | None = None
        self._timed_out = False

    def deadline(self, requested: float | None) -> float | None:
        """This call's deadline (see ``Bulkhead.deadline``)."""
        return self.bulkhead.deadline(requested)

    def slow_call_threshold(self) -> float:
        return self.bulkhead.slow_call_threshold()

    def sending(self) -> None:
        """The request leaves for the Gateway now (its latency is timed from here)."""
        self._started = time.monotonic()

    def answered(self) -> float:
        """The Gateway answered (any status); returns the seconds it took."""
        started = self._started if self._started is not None else time.monotonic()
        self._answered_in = time.monotonic() - started
        return self._answered_in

    def timed_out(self) -> None:
        self._timed_out = True


@contextmanager
def gateway_call_slot(request: HttpRequest | None = None) -> Iterator[CallSlot]:
    """Hold one of this process's ``bulkhead_size()`` Gateway calls (``MAX_CONCURRENT_MINTS``).

    Waits in line for up to ``BULKHEAD_WAIT`` when all are taken, then raises
    ``GatewayBusy``: a stalled Gateway may hold that many server threads,
    never more, for long. Works for threads (WSGI) and for sync views run in
    threads under ASGI alike. Tell the slot when the request is sent and how
    it ended, so the process learns the Gateway's latency.
    """
    bulkhead = _bulkhead
    slot = CallSlot(bulkhead, bulkhead.enter(bulkhead_size(request)))
    try:
        yield slot
    finally:
        bulkhead.leave(answered_in=slot._answered_in, timed_out=slot._timed_out)
