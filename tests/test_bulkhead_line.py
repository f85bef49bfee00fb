"""The bulkhead's line and the slow line: what a stall may hold, and what it must not refuse.

A full bulkhead makes a mint wait in line for a call to end (about twice
the Gateway's recent latency), then refuses it and, until a call ends,
every mint after it at once. After a call ran out of time the next one's
deadline is the slow line (a multiple of the recent latency); otherwise a
mint keeps the caller's deadline, however many others are in flight.
Outcomes only: every wait here ends on an event.
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, transaction
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext

from gateway_realtime import bulkhead, services
from gateway_realtime.exceptions import GatewayBusy, GatewayTimeoutError
from gateway_realtime.models import ClientSecretIssuance
from gateway_realtime.protocol import Kind, MintedSecret
from tests.conftest import EXPIRES_AT


class HeldClient:
    """A Gateway client whose first call waits for the test; it records each deadline."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def mint(self, *, kind: Any, model: str, credential: Any, **options: Any) -> MintedSecret:
        self.timeouts.append(options.get("timeout"))
        if len(self.timeouts) == 1:
            self.entered.set()
            assert self.release.wait(10), "never released"
        return MintedSecret(
            token=f"vcst_held{len(self.timeouts):04d}abcdefghijklmnop",
            expires_at=EXPIRES_AT,
            url="wss://gateway.test/v4/ai/realtime-model?ai-model-id=m",
            kind=Kind(kind),
            model=model,
            status=200,
        )


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch, settings: Any) -> HeldClient:
    settings.GATEWAY_REALTIME_API_KEY = "test-key"
    client = HeldClient()
    monkeypatch.setattr(services, "get_client", lambda: client)
    return client


@pytest.mark.django_db(transaction=True)
def test_a_mint_beside_another_keeps_the_callers_deadline(
    held: HeldClient, user: Any, settings: Any
) -> None:
    # A Gateway that answers in 0.9 s is healthy: a mint that starts while
    # another waits on it is not cut short (the old fixed SLOW_CALL was).
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 4
    bulkhead.process_bulkhead().latency = 0.9
    first = threading.Thread(
        target=lambda: (services.mint_client_secret(user=user, kind="realtime"), connection.close())
    )
    first.start()
    assert held.entered.wait(10)
    try:
        services.mint_client_secret(user=user, kind="realtime")
        services.mint_client_secret(user=user, kind="realtime", timeout=0.2)
    finally:
        held.release.set()
        first.join(10)
    # No deadline passed (the client's TOTAL_TIMEOUT), or the caller's own.
    assert held.timeouts == [None, None, 0.2]


@pytest.mark.django_db(transaction=True)
def test_a_successful_mint_is_five_statements_and_one_transaction(
    held: HeldClient, user: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_QUOTA = 10
    held.release.set()
    in_transaction: list[bool] = []

    def watch(sender: Any, instance: ClientSecretIssuance, **kwargs: Any) -> None:
        in_transaction.append(transaction.get_connection().in_atomic_block)

    services.mint_client_secret(user=user, kind="realtime")  # the user's quota row exists
    pre_save.connect(watch, sender=ClientSecretIssuance)
    try:
        with CaptureQueriesContext(connection) as queries:
            services.mint_client_secret(user=user, kind="realtime")
    finally:
        pre_save.disconnect(watch, sender=ClientSecretIssuance)
    # The quota claim and the pending row in one transaction; the completion
    # and the usage ledger's increments (the user's row, the site's) are one
    # statement each that commits on its own. At the default ledger interval
    # the ledger's two are gathered and written later (tests/test_usage.py).
    assert in_transaction == [True, False]
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The claim, the pending row, the completion, the ledger's two (SQLite
    # also logs its BEGIN and COMMIT; PostgreSQL's are not queries).
    control = {"BEGIN", "COMMIT"}
    expected = ["UPDATE", "INSERT", "UPDATE", "UPDATE", "UPDATE"]
    assert [s for s in statements if s not in control] == expected
    assert statements.count("BEGIN") <= 1


def sizes_in_a_pool(threads: int) -> set[int]:
    """``bulkhead_size()`` as each thread of a warm ``threads``-thread pool sees it."""
    everyone_in = threading.Barrier(threads)

    def size() -> int:
        everyone_in.wait(10)  # every thread of the pool exists
        return bulkhead.bulkhead_size()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return set(pool.map(lambda _: size(), range(threads)))


def test_the_default_bulkhead_leaves_a_thread_of_every_pool(settings: Any) -> None:
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = None
    # gunicorn gthread: 4 threads mint 3 at once, 2 threads one; never over 4.
    assert sizes_in_a_pool(4) == {3}
    assert sizes_in_a_pool(2) == {1}
    assert sizes_in_a_pool(8) == {4}
    # A server's main thread (a sync worker) is one thread.
    assert bulkhead.bulkhead_size() == 1
    # A thread the app cannot place: the most.
    found: list[int] = []
    other = threading.Thread(target=lambda: found.append(bulkhead.bulkhead_size()))
    other.start()
    other.join(10)
    assert found == [bulkhead.AUTO_MAX_CONCURRENT_MINTS]
    # Under ASGI every request's sync code has its own thread.
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    asgi = ASGIRequest(scope, io.BytesIO())
    assert bulkhead.bulkhead_size(asgi) == bulkhead.AUTO_MAX_CONCURRENT_MINTS
    # A number is used as it is.
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 6
    assert sizes_in_a_pool(2) == {6}
    assert bulkhead.bulkhead_size() == 6


class TimingOutClient(HeldClient):
    """Runs out of time while ``failing``; records each deadline."""

    failing = True

    def mint(self, *, kind: Any, model: str, credential: Any, **options: Any) -> MintedSecret:
        if self.failing:
            self.timeouts.append(options.get("timeout"))
            raise GatewayTimeoutError("Timed out talking to the Gateway (emulated)")
        self.release.set()
        return super().mint(kind=kind, model=model, credential=credential, **options)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("latency", "line"),
    [(None, 3.0), (0.05, 0.5), (0.3, 1.2), (0.9, 3.0), (2.5, 3.0)],
    ids=["no-answer-yet", "50ms", "300ms", "900ms", "2500ms"],
)
def test_after_a_time_out_the_next_mint_gets_the_slow_line(
    monkeypatch: pytest.MonkeyPatch, user: Any, settings: Any, latency: Any, line: float
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = "test-key"
    settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 100
    client = TimingOutClient()
    monkeypatch.setattr(services, "get_client", lambda: client)
    bulkhead.process_bulkhead().latency = latency
    for _ in range(2):
        with pytest.raises(GatewayTimeoutError):
            services.mint_client_secret(user=user, kind="realtime")
    client.failing = False
    services.mint_client_secret(user=user, kind="realtime")  # answers: trusted again
    services.mint_client_secret(user=user, kind="realtime")
    # A sync worker whose call ran out of time does not wait a whole deadline
    # again, unless the Gateway's own latency needs it: the line is 4 times
    # the recent latency, at least SLOW_CALL_MIN (0.5 s), at most TOTAL_TIMEOUT.
    assert client.timeouts == [None, line, line, None]


def test_the_wait_follows_the_gateways_latency(settings: Any) -> None:
    line = bulkhead.Bulkhead()
    assert line.wait_bound() == 1.0  # before any answer: a 0.5 s Gateway assumed
    for latency, wait in [(0.01, 0.1), (0.05, 0.1), (0.4, 0.8), (0.9, 1.8), (2.5, 3.0)]:
        line.latency = latency
        assert line.wait_bound() == pytest.approx(wait)
    settings.GATEWAY_REALTIME_BULKHEAD_WAIT = 0.2
    assert line.wait_bound() == 0.2
    settings.GATEWAY_REALTIME_BULKHEAD_WAIT = None
    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = 2.0
    assert line.wait_bound() == 2.0


def test_the_latency_rises_fast_and_falls_slowly() -> None:
    line = bulkhead.Bulkhead()
    line.enter(1)
    line.leave(answered_in=0.1)
    assert line.latency == pytest.approx(0.1)
    line.enter(1)
    line.leave(answered_in=0.9)  # half way up at once
    assert line.latency == pytest.approx(0.5)
    line.enter(1)
    line.leave(answered_in=0.0)  # a tenth of the way down
    assert line.latency == pytest.approx(0.45)
    line.enter(1)
    line.leave(timed_out=True)  # no answer: nothing learnt, but the line is cut
    assert line.latency == pytest.approx(0.45)
    assert line.last_call_timed_out
    line.enter(1)
    line.leave(answered_in=0.45)
    assert not line.last_call_timed_out


def test_a_full_bulkhead_hands_the_next_free_call_to_the_first_in_line() -> None:
    line = bulkhead.Bulkhead()
    line.latency = 5.0  # a slow Gateway: the wait is long (never reached here)
    assert line.enter(2) == 0
    assert line.enter(2) == 1
    order: list[str] = []

    def wait(name: str) -> None:
        line.enter(2)
        order.append(name)

    first = threading.Thread(target=wait, args=("first",))
    first.start()
    until(lambda: line.waiting == 1)
    second = threading.Thread(target=wait, args=("second",))
    second.start()
    until(lambda: line.waiting == 2)
    # A third may not queue: at most as many wait as may be in flight.
    with pytest.raises(GatewayBusy):
        line.enter(2)
    line.leave(answered_in=0.1)
    first.join(10)
    assert order == ["first"] and line.in_flight == 2 and line.waiting == 1
    line.leave(answered_in=0.1)
    second.join(10)
    assert order == ["first", "second"] and line.waiting == 0
    line.leave(answered_in=0.1)
    line.leave(answered_in=0.1)
    assert line.in_flight == 0


def test_a_wait_in_vain_refuses_the_next_at_once_until_a_call_ends(settings: Any) -> None:
    line = bulkhead.Bulkhead()
    line.enter(1)  # a call the Gateway never answers
    settings.GATEWAY_REALTIME_BULKHEAD_WAIT = 0.01
    with pytest.raises(GatewayBusy):
        line.enter(1)  # waited, in vain
    # Now even a long wait is refused at once: the Gateway is not ending calls.
    settings.GATEWAY_REALTIME_BULKHEAD_WAIT = 60
    refused: list[BaseException] = []

    def enter() -> None:
        try:
            line.enter(1)
        except GatewayBusy as error:
            refused.append(error)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(refused) == 1
    # A call ends: mints may wait again, and the next call is theirs.
    line.leave(timed_out=True)
    assert line.enter(1) == 0
    line.leave(answered_in=0.05)


def test_a_forked_worker_starts_with_a_bulkhead_of_its_own() -> None:
    parent = bulkhead.process_bulkhead()
    parent.enter(1)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a fresh bulkhead, nothing in flight
            fresh = bulkhead.process_bulkhead()
            os._exit(0 if fresh is not parent and fresh.in_flight == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        parent.leave()


def until(condition: Any) -> None:
    pause = threading.Event()
    for _ in range(2000):
        if condition():
            return
        pause.wait(0.005)
    raise AssertionError("the condition never held")


def test_a_grown_bulkhead_lets_those_in_line_in() -> None:
    # A thread pool that is still starting its threads sees a smaller size
    # first: once it has grown, the free calls go to those waiting.
    line = bulkhead.Bulkhead()
    line.latency = 5.0
    line.enter(1)
    waiting = threading.Thread(target=line.enter, args=(1,))
    waiting.start()
    until(lambda: line.waiting == 1)
    assert line.enter(3) == 2  # the waiting mint got the second call, this one the third
    waiting.join(10)
    assert (line.in_flight, line.waiting) == (3, 0)
