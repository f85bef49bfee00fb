"""A stall cannot take a process's threads: the bulkhead's default size and ``SLOW_CALL``.

``mint_client_secret`` passes the Gateway client a whole deadline: the
caller's (or ``TOTAL_TIMEOUT``) when no other mint of the process is waiting
on the Gateway, and at most ``GATEWAY_REALTIME_SLOW_CALL`` when one is.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, transaction
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext

from gateway_realtime import checks, services
from gateway_realtime.exceptions import GatewayTimeoutError
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
def test_a_mint_that_starts_while_another_waits_gets_the_slow_call_deadline(
    held: HeldClient, user: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_SLOW_CALL = 0.5
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 4
    first = threading.Thread(
        target=lambda: (services.mint_client_secret(user=user, kind="realtime"), connection.close())
    )
    first.start()
    assert held.entered.wait(10)
    try:
        # One call of this process is waiting on the Gateway.
        services.mint_client_secret(user=user, kind="realtime")
        services.mint_client_secret(user=user, kind="realtime", timeout=0.2)
    finally:
        held.release.set()
        first.join(10)
    # Alone: no deadline passed (the client's TOTAL_TIMEOUT); beside it: SLOW_CALL,
    # or the caller's own if shorter.
    assert held.timeouts == [None, 0.5, 0.2]
    # Alone again: the caller's deadline as it asked.
    services.mint_client_secret(user=user, kind="realtime", timeout=2.0)
    assert held.timeouts[-1] == 2.0


def test_slow_call_longer_than_the_deadline_is_a_check_error(settings: Any) -> None:
    settings.GATEWAY_REALTIME_SLOW_CALL = 5
    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = 3
    assert "gateway_realtime.E023" in [m.id for m in checks.check_settings(None)]
    settings.GATEWAY_REALTIME_SLOW_CALL = 0
    assert "gateway_realtime.E005" in [m.id for m in checks.check_settings(None)]
    settings.GATEWAY_REALTIME_SLOW_CALL = 0.75
    ids = [m.id for m in checks.check_settings(None)]
    assert "gateway_realtime.E023" not in ids and "gateway_realtime.E005" not in ids


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
        return services.bulkhead_size()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return set(pool.map(lambda _: size(), range(threads)))


def test_the_default_bulkhead_leaves_a_thread_of_every_pool(settings: Any) -> None:
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = None
    # gunicorn gthread: 4 threads mint 3 at once, 2 threads one; never over 4.
    assert sizes_in_a_pool(4) == {3}
    assert sizes_in_a_pool(2) == {1}
    assert sizes_in_a_pool(8) == {4}
    # A server's main thread (a sync worker) is one thread.
    assert services.bulkhead_size() == 1
    # A thread the app cannot place: the most.
    found: list[int] = []
    other = threading.Thread(target=lambda: found.append(services.bulkhead_size()))
    other.start()
    other.join(10)
    assert found == [services.AUTO_MAX_CONCURRENT_MINTS]
    # Under ASGI every request's sync code has its own thread.
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    asgi = ASGIRequest(scope, io.BytesIO())
    assert services.bulkhead_size(asgi) == services.AUTO_MAX_CONCURRENT_MINTS
    # A number is used as it is.
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 6
    assert sizes_in_a_pool(2) == {6}
    assert services.bulkhead_size() == 6


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
def test_after_a_time_out_the_next_mint_alone_gets_the_slow_call_deadline(
    monkeypatch: pytest.MonkeyPatch, user: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = "test-key"
    settings.GATEWAY_REALTIME_BREAKER_FAILURES = 100
    client = TimingOutClient()
    monkeypatch.setattr(services, "get_client", lambda: client)
    for _ in range(2):
        with pytest.raises(GatewayTimeoutError):
            services.mint_client_secret(user=user, kind="realtime")
    client.failing = False
    services.mint_client_secret(user=user, kind="realtime")  # answers: trusted again
    services.mint_client_secret(user=user, kind="realtime")
    # A sync worker whose call ran out of time does not wait a whole deadline again.
    assert client.timeouts == [None, 0.75, 0.75, None]
