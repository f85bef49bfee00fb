"""A circuit breaker for the Gateway, shared by every worker through a cache.

Closed, mints call the Gateway and their failures are counted (time-outs,
connection failures, 5xx and answers that break the contract; not 4xx
answers, which show the Gateway is up, nor our own configuration errors).
``GATEWAY_REALTIME_BREAKER_FAILURES`` of them within one
``GATEWAY_REALTIME_BREAKER_WINDOW`` (windows aligned on the epoch, so every
worker counts in the same key) open the circuit for
``GATEWAY_REALTIME_BREAKER_COOLDOWN`` seconds: mints then raise
``GatewayUnavailable`` at once, without calling the Gateway. After the
cool-down the circuit is half-open: exactly one mint, the probe, is let
through (the others keep failing fast); its success closes the circuit, its
failure opens it for another cool-down.

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


@dataclass(frozen=True)
class CircuitState:
    """What ``circuit_state()`` reports (the management command prints it)."""

    state: str
    #: Whole seconds left of the cool-down while open, else 0.
    seconds_left: int
    #: Failures counted in the current window.
    failures: int
    #: Whether a probe mint is in flight (half-open).
    probing: bool


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


def _window_key(now: float) -> str:
    window = app_settings.BREAKER_WINDOW
    return _key(f"failures:{int(now // window)}")


def _whole_seconds(value: float) -> int:
    return max(1, math.ceil(value))


def _cache_failed(action: str, error: Exception) -> None:
    logger.warning(
        "The circuit breaker's cache failed while %s (%s); the mint goes ahead",
        action,
        type(error).__name__,
    )


@contextmanager
def guard(deadline: float | None = None) -> Iterator[None]:
    """Run one Gateway call under the breaker; raise ``GatewayUnavailable`` while open.

    ``deadline``: the call's whole deadline in seconds (default
    ``GATEWAY_REALTIME_TOTAL_TIMEOUT``); a probe holds its place that long
    at most, should its worker die.
    """
    probe = _before_call(deadline if deadline is not None else app_settings.TOTAL_TIMEOUT)
    try:
        yield
    except Exception as error:
        _after_failure(error, probe=probe)
        raise
    _after_success(probe=probe)


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
                _count_failure()
        elif probe:
            if isinstance(error, GatewayError):
                # The Gateway answered (a 4xx): it is up.
                _close()
            else:
                # The probe never reached the Gateway: let another one try.
                _cache().delete(_key("probe"))
    except Exception as cache_error:
        _cache_failed("recording a failure", cache_error)


def _after_success(*, probe: bool) -> None:
    if not probe:
        return
    try:
        _close()
    except Exception as cache_error:
        _cache_failed("closing the circuit", cache_error)


def _count_failure() -> None:
    cache = _cache()
    now = time.time()
    key = _window_key(now)
    lifetime = _whole_seconds(app_settings.BREAKER_WINDOW) + 1
    cache.add(key, 0, timeout=lifetime)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.set(key, 1, timeout=lifetime)
        failures = 1
    if failures < app_settings.BREAKER_FAILURES:
        return
    cooldown = app_settings.BREAKER_COOLDOWN
    until = now + cooldown
    # The latch: of every worker that sees the threshold, one adds the key.
    if not cache.add(_key("opened"), {"until": until, "failures": failures}, timeout=None):
        return
    cache.set(_key("open_until"), until, timeout=_whole_seconds(cooldown))
    logger.warning(
        "The circuit breaker opened: %d Gateway failures within %g s; "
        "mints fail fast for %g s, then one probe decides",
        failures,
        app_settings.BREAKER_WINDOW,
        cooldown,
    )
    circuit_opened.send(sender=None, failures=failures, cooldown=_whole_seconds(cooldown))


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
    cache.delete_many([_key("open_until"), _key("probe"), _window_key(time.time())])
    if closed:
        logger.info("The circuit breaker closed: the Gateway answered a probe mint")
        circuit_closed.send(sender=None)


def circuit_state() -> CircuitState:
    """The circuit as the breaker's cache holds it now (raises if the cache fails)."""
    cache = _cache()
    now = time.time()
    found = cache.get_many([_key("opened"), _key("open_until"), _key("probe"), _window_key(now)])
    failures = int(found.get(_window_key(now)) or 0)
    opened = found.get(_key("opened"))
    if opened is None:
        return CircuitState(CLOSED, 0, failures, False)
    until = max(float(found.get(_key("open_until")) or 0), float(opened.get("until", 0)))
    if now < until:
        return CircuitState(OPEN, _whole_seconds(until - now), failures, False)
    return CircuitState(HALF_OPEN, 0, failures, _key("probe") in found)


def reset_circuit() -> bool:
    """Close the circuit and forget its failures; return whether it was open.

    Sends ``circuit_closed`` when it was.
    """
    cache = _cache()
    was_open = bool(cache.delete(_key("opened")))
    cache.delete_many([_key("open_until"), _key("probe"), _window_key(time.time())])
    if was_open:
        logger.info("The circuit breaker was reset by hand")
        circuit_closed.send(sender=None)
    return was_open
