"""A circuit breaker for the Gateway, shared by every worker through a cache.

Closed, mints call the Gateway and every call that reaches it is counted,
in a sliding window of ``GATEWAY_REALTIME_BREAKER_WINDOW`` seconds (five
buckets, aligned on the epoch, so every worker counts in the same keys).
A call is bad when it fails (time-outs, connection failures, 5xx and
answers that break the contract; not 4xx answers, which show the Gateway is
up, nor our own configuration errors) or succeeds slower than the slow line
(``gateway_realtime.bulkhead``: a multiple of the Gateway's own recent
latency, never a fixed figure). Once the window holds at least
``GATEWAY_REALTIME_BREAKER_MIN_CALLS`` calls and at least
``GATEWAY_REALTIME_BREAKER_FAILURE_RATE`` of them are bad, the circuit opens
for ``GATEWAY_REALTIME_BREAKER_COOLDOWN`` seconds: mints then raise
``GatewayUnavailable`` at once, without calling the Gateway. A rate, not a
count: a busy site whose Gateway fails one call in seven keeps minting the
other six, and a dead Gateway opens the circuit within the minimum of calls.
After the cool-down the circuit is half-open: exactly one mint, the probe,
is let through (the others keep failing fast); its success closes the
circuit and forgets the window, its failure opens it for another cool-down.

The state lives in ``GATEWAY_REALTIME_BREAKER_CACHE`` through Django's public
cache API only, so with Redis every worker on every host sees one circuit;
with a local-memory cache each process has its own. ``cache.add`` is the
latch that makes exactly one process send ``circuit_opened`` (and
``cache.delete``'s result the one for ``circuit_closed``).

The breaker protects; it does not gate: if its cache fails, the error is
logged and the mint goes ahead (the rate limit and the quota already fail
closed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.cache import BaseCache, caches

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import (
    GatewayConnectionError,
    GatewayError,
    GatewayInternalServerError,
    GatewayResponseError,
    GatewayTimeoutError,
    GatewayUnavailable,
)
from gateway_realtime.signals import circuit_closed, circuit_opened

logger = logging.getLogger("gateway_realtime")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
#: The window is counted in this many buckets of WINDOW / BUCKETS seconds.
BUCKETS = 5


@dataclass(frozen=True)
class CircuitState:
    """What ``circuit_state()`` reports (the management command prints it)."""

    state: str
    #: Whole seconds left of the cool-down while open, else 0.
    seconds_left: int
    #: Bad calls (failed or slow) counted in the sliding window.
    failures: int
    #: Whether a probe mint is in flight (half-open).
    probing: bool
    #: Every call counted in the sliding window.
    calls: int = 0


def counts_as_failure(error: BaseException) -> bool:
    """Whether ``error`` says the Gateway is failing (and so counts towards opening).

    Time-outs, connection failures, 5xx and unusable answers count; a 4xx
    answer (credential, model, policy, rate limit) means the Gateway is up.
    """
    if isinstance(
        error,
        GatewayTimeoutError
        | GatewayConnectionError
        | GatewayInternalServerError
        | GatewayResponseError,
    ):
        return True
    return (
        isinstance(error, GatewayError)
        and error.status_code is not None
        and error.status_code >= 500
    )


def _cache() -> BaseCache:
    return caches[app_settings.BREAKER_CACHE]


def _key(name: str) -> str:
    return f"{app_settings.RATE_KEY_PREFIX}:circuit:{name}"


def _bucket_seconds() -> float:
    return app_settings.BREAKER_WINDOW / BUCKETS


def _bucket_keys(now: float) -> list[tuple[str, str]]:
    """The window's (calls, bad) keys, newest first."""
    current = int(now // _bucket_seconds())
    return [
        (_key(f"calls:{bucket}"), _key(f"bad:{bucket}"))
        for bucket in range(current, current - BUCKETS, -1)
    ]


def _whole_seconds(value: float) -> int:
    return max(1, math.ceil(value))


def _cache_failed(action: str, error: Exception) -> None:
    logger.warning(
        "The circuit breaker's cache failed while %s (%s); the mint goes ahead",
        action,
        type(error).__name__,
    )


class Call:
    """One guarded call: the caller says how long the Gateway took to answer it."""

    __slots__ = ("answered_in",)

    def __init__(self) -> None:
        #: Seconds the Gateway took to answer, when it did.
        self.answered_in: float | None = None


@contextmanager
def guard(deadline: float | None = None, *, slow_after: float | None = None) -> Iterator[Call]:
    """Run one Gateway call under the breaker; raise ``GatewayUnavailable`` while open.

    ``deadline``: the call's whole deadline in seconds (default
    ``GATEWAY_REALTIME_TOTAL_TIMEOUT``); a probe holds its place that long
    at most, should its worker die. ``slow_after``: the slow line in
    seconds; a success answered later than that counts as bad, so set the
    yielded ``Call``'s ``answered_in`` when the Gateway answers.
    """
    probe = _before_call(deadline if deadline is not None else app_settings.TOTAL_TIMEOUT)
    call = Call()
    try:
        yield call
    except Exception as error:
        _after_failure(error, probe=probe)
        raise
    slow = slow_after is not None and call.answered_in is not None and call.answered_in > slow_after
    _after_success(probe=probe, slow=slow)


def _before_call(deadline: float) -> bool:
    """Raise while open; return whether this call is the half-open probe."""
    now = time.time()
    try:
        cache = _cache()
        found = cache.get_many([_key("opened"), _key("open_until")])
        opened: dict[str, Any] | None = found.get(_key("opened"))
        until = found.get(_key("open_until"))
        if opened is None:
            return False
        until = max(float(until or 0), float(opened.get("until", 0)))
        if now < until:
            raise _unavailable(until - now)
        if cache.add(_key("probe"), now, timeout=_whole_seconds(deadline)):
            logger.info("The circuit breaker lets one probe mint through to the Gateway")
            return True
    except GatewayUnavailable:
        raise
    except Exception as error:  # any cache backend's own errors: protect, never gate
        _cache_failed("checking the circuit", error)
        return False
    raise _unavailable(1)


def _unavailable(seconds: float) -> GatewayUnavailable:
    wait = _whole_seconds(seconds)
    return GatewayUnavailable(
        "The Gateway has been failing, so minting is paused for "
        f"{wait} s (the circuit breaker is open).",
        retry_after=wait,
    )


def _after_failure(error: Exception, *, probe: bool) -> None:
    try:
        if counts_as_failure(error):
            if probe:
                _reopen()
            else:
                _count(bad=True)
        elif isinstance(error, GatewayError):
            # The Gateway answered (a 4xx): it is up.
            if probe:
                _close()
            else:
                _count(bad=False)
        elif probe:
            # The probe never reached the Gateway: let another one try.
            _cache().delete(_key("probe"))
    except Exception as cache_error:
        _cache_failed("recording a failure", cache_error)


def _after_success(*, probe: bool, slow: bool = False) -> None:
    try:
        if probe:
            # Answered, however slowly: the Gateway is up.
            _close()
        else:
            _count(bad=slow)
    except Exception as cache_error:
        _cache_failed("recording a call", cache_error)


def _incr(cache: BaseCache, key: str, lifetime: int) -> None:
    try:
        cache.incr(key)
    except ValueError:  # the bucket's first call, or it expired meanwhile
        if not cache.add(key, 1, timeout=lifetime):
            cache.incr(key)


def _count(*, bad: bool) -> None:
    """Count one call in the current bucket; after a bad one, open if the rate says so."""
    cache = _cache()
    now = time.time()
    keys = _bucket_keys(now)
    calls_key, bad_key = keys[0]
    lifetime = _whole_seconds(app_settings.BREAKER_WINDOW + _bucket_seconds()) + 1
    _incr(cache, calls_key, lifetime)
    if not bad:
        return
    _incr(cache, bad_key, lifetime)
    calls, failures = _window(cache, keys)
    if calls < app_settings.BREAKER_MIN_CALLS:
        return
    if failures < app_settings.BREAKER_FAILURE_RATE * calls:
        return
    cooldown = app_settings.BREAKER_COOLDOWN
    until = now + cooldown
    # The latch: of every worker that sees the threshold, one adds the key.
    if not cache.add(_key("opened"), {"until": until, "failures": failures}, timeout=None):
        return
    cache.set(_key("open_until"), until, timeout=_whole_seconds(cooldown))
    logger.warning(
        "The circuit breaker opened: %d of the last %d Gateway calls failed or were slow "
        "(within %g s); mints fail fast for %g s, then one probe decides",
        failures,
        calls,
        app_settings.BREAKER_WINDOW,
        cooldown,
    )
    circuit_opened.send(sender=None, failures=failures, cooldown=_whole_seconds(cooldown))


def _window(cache: BaseCache, keys: list[tuple[str, str]]) -> tuple[int, int]:
    """(calls, bad calls) over the sliding window's buckets."""
    found = cache.get_many([key for pair in keys for key in pair])
    calls = sum(int(found.get(calls_key) or 0) for calls_key, _ in keys)
    failures = sum(int(found.get(bad_key) or 0) for _, bad_key in keys)
    return calls, failures


def _forget_window(cache: BaseCache) -> None:
    keys = _bucket_keys(time.time())
    cache.delete_many([key for pair in keys for key in pair])


def _reopen() -> None:
    cache = _cache()
    cooldown = app_settings.BREAKER_COOLDOWN
    until = time.time() + cooldown
    cache.set(_key("opened"), {"until": until, "failures": 1}, timeout=None)
    cache.set(_key("open_until"), until, timeout=_whole_seconds(cooldown))
    cache.delete(_key("probe"))
    logger.warning(
        "The circuit breaker's probe mint failed; the circuit stays open for %g s", cooldown
    )


def _close() -> None:
    cache = _cache()
    # delete() says whether the key was there: the one that removes it reports.
    closed = cache.delete(_key("opened"))
    cache.delete_many([_key("open_until"), _key("probe")])
    _forget_window(cache)
    if closed:
        logger.info("The circuit breaker closed: the Gateway answered a probe mint")
        circuit_closed.send(sender=None)


def circuit_state() -> CircuitState:
    """The circuit as the breaker's cache holds it now (raises if the cache fails)."""
    cache = _cache()
    now = time.time()
    keys = _bucket_keys(now)
    calls, failures = _window(cache, keys)
    found = cache.get_many([_key("opened"), _key("open_until"), _key("probe")])
    opened = found.get(_key("opened"))
    if opened is None:
        return CircuitState(CLOSED, 0, failures, False, calls)
    until = max(float(found.get(_key("open_until")) or 0), float(opened.get("until", 0)))
    if now < until:
        return CircuitState(OPEN, _whole_seconds(until - now), failures, False, calls)
    return CircuitState(HALF_OPEN, 0, failures, _key("probe") in found, calls)


def reset_circuit() -> bool:
    """Close the circuit and forget its window; return whether it was open.

    Sends ``circuit_closed`` when it was.
    """
    cache = _cache()
    was_open = bool(cache.delete(_key("opened")))
    cache.delete_many([_key("open_until"), _key("probe")])
    _forget_window(cache)
    if was_open:
        logger.info("The circuit breaker was reset by hand")
        circuit_closed.send(sender=None)
    return was_open
