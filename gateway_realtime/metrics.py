"""Prometheus metrics for the site's own monitoring (docs/metrics.md).

With ``prometheus-client`` installed (the ``metrics`` extra, or already there
through django-prometheus) and ``GATEWAY_REALTIME_METRICS`` true (the
default), the app counts on the client's default registry, which the site's
``/metrics`` view exposes with everything else:

- ``gateway_realtime_mints_total{kind, outcome, error_type}``: completed
  mints (``issued``, ``failed``, ``rejected``);
- ``gateway_realtime_gateway_latency_seconds{kind}``: the Gateway call of
  each issued or failed mint (a histogram);
- ``gateway_realtime_bulkhead_refusals_total{kind}``: mints refused at once
  because the process had ``MAX_CONCURRENT_MINTS`` in flight;
- ``gateway_realtime_breaker_open``: 1 while the shared circuit is open or
  half-open, read from the breaker's cache at each scrape;
- ``gateway_realtime_relay_live_sessions{kind}``: relayed sessions running;
- ``gateway_realtime_relay_sessions_total{kind, closed_by}``, and the
  metered ``gateway_realtime_relay_audio_seconds_total{kind, direction}``
  and ``gateway_realtime_relay_tokens_total{kind, direction}`` of the
  sessions that ended.

No label holds a user, a username, a token or anything a request chose
freely: kinds, outcomes, error types and sides are the app's own small sets,
so the number of series stays bounded. Counting costs a mint a dictionary
lookup and an addition (the mint signals' receivers); nothing here touches
the database or the cache, except the breaker gauge at scrape time.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from typing import Any, ParamSpec

from gateway_realtime.conf import app_settings

logger = logging.getLogger("gateway_realtime")

AVAILABLE = importlib.util.find_spec("prometheus_client") is not None

#: Seconds: a healthy mint takes tens of milliseconds; the deadline is 3 s.
LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

_metrics: dict[str, Any] = {}


def _registered() -> dict[str, Any]:
    """The metrics, made and registered on the default registry the first time."""
    if _metrics or not AVAILABLE:
        return _metrics
    from prometheus_client import REGISTRY, Counter, Gauge, Histogram

    _metrics.update(
        mints=Counter(
            "gateway_realtime_mints",
            "Client secret mints that completed, by kind, outcome and error type.",
            ["kind", "outcome", "error_type"],
        ),
        latency=Histogram(
            "gateway_realtime_gateway_latency_seconds",
            "The Gateway call of each issued or failed mint.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
        ),
        bulkhead=Counter(
            "gateway_realtime_bulkhead_refusals",
            "Mints refused at once: the process had MAX_CONCURRENT_MINTS in flight.",
            ["kind"],
        ),
        live=Gauge(
            "gateway_realtime_relay_live_sessions",
            "Relayed sessions running.",
            ["kind"],
            multiprocess_mode="livesum",
        ),
        sessions=Counter(
            "gateway_realtime_relay_sessions",
            "Relayed sessions that ended, by who ended them.",
            ["kind", "closed_by"],
        ),
        audio=Counter(
            "gateway_realtime_relay_audio_seconds",
            "Audio metered in ended relayed sessions (in: from the browser).",
            ["kind", "direction"],
        ),
        tokens=Counter(
            "gateway_realtime_relay_tokens",
            "Tokens the Gateway reported in ended relayed sessions.",
            ["kind", "direction"],
        ),
    )
    REGISTRY.register(BreakerCollector())
    return _metrics


def enabled() -> bool:
    return AVAILABLE and app_settings.METRICS


P = ParamSpec("P")


def _recorder(function: Callable[P, None]) -> Callable[P, None]:
    """Record only while enabled; a fault is logged, never raised into a mint or a session.

    The mint signals' receivers run after the secret is recorded, and Django
    hands a receiver's exception to the sender: a metric must not cost a user
    the secret (nor a relayed session its cleanup).
    """

    @functools.wraps(function)
    def record(*args: P.args, **kwargs: P.kwargs) -> None:
        if not enabled():
            return
        try:
            function(*args, **kwargs)
        except Exception as error:
            logger.warning("A metric was not recorded (%s)", type(error).__name__)

    return record


class BreakerCollector:
    """``gateway_realtime_breaker_open``, read from the shared breaker at each scrape.

    In prometheus-client's multiprocess mode the scrape's own registry does
    not see this process's collectors: register one there too
    (docs/metrics.md).
    """

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from gateway_realtime.breaker import circuit_state

        family = GaugeMetricFamily(
            "gateway_realtime_breaker_open",
            "1 while the shared circuit breaker is open or half-open (mints refused).",
        )
        if enabled():
            try:
                state = circuit_state().state
            except Exception:  # a cache that cannot be read: no sample, not a failed scrape
                return
            family.add_metric([], 0.0 if state == "closed" else 1.0)
            yield family

    def describe(self) -> Any:
        return []


@_recorder
def mint_completed(sender: Any, issuance: Any, **kwargs: Any) -> None:
    """The ``client_secret_issued`` and ``client_secret_failed`` receiver."""
    metrics = _registered()
    error_type = issuance.error_type or ""
    metrics["mints"].labels(issuance.kind, issuance.outcome, error_type).inc()
    if issuance.outcome != "rejected" and issuance.latency_ms is not None:
        metrics["latency"].labels(issuance.kind).observe(issuance.latency_ms / 1000)
    if error_type == "gateway_busy":
        metrics["bulkhead"].labels(issuance.kind).inc()


@_recorder
def relay_started(kind: str) -> None:
    _registered()["live"].labels(kind).inc()


@_recorder
def relay_ended(row: Any) -> None:
    """A relayed session that had started ended: its row holds the close and the meter.

    Called before the row is saved, so that a database that cannot take the
    row leaves no session counted as live for ever.
    """
    metrics = _registered()
    metrics["live"].labels(row.kind).dec()
    metrics["sessions"].labels(row.kind, row.closed_by or "").inc()
    metrics["audio"].labels(row.kind, "in").inc(row.audio_seconds_in)
    metrics["audio"].labels(row.kind, "out").inc(row.audio_seconds_out)
    metrics["tokens"].labels(row.kind, "in").inc(row.input_tokens)
    metrics["tokens"].labels(row.kind, "out").inc(row.output_tokens)


def connect() -> None:
    """Register the metrics and connect the mint signals (``AppConfig.ready``)."""
    if not AVAILABLE:
        return
    from gateway_realtime.signals import client_secret_failed, client_secret_issued

    _registered()
    client_secret_issued.connect(mint_completed, dispatch_uid="gateway_realtime.metrics.issued")
    client_secret_failed.connect(mint_completed, dispatch_uid="gateway_realtime.metrics.failed")


__all__ = ["AVAILABLE", "LATENCY_BUCKETS", "BreakerCollector", "connect", "enabled"]
