"""The bulkhead: at most ``GATEWAY_REALTIME_MAX_CONCURRENT_MINTS`` Gateway calls per process."""

from __future__ import annotations

import itertools
import json
import threading
from contextlib import ExitStack
from typing import Any

import pytest
import responses
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext

from gateway_realtime.exceptions import GatewayBusy
from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter
from gateway_realtime.services import gateway_call_slot, mint_client_secret
from tests.conftest import (
    EXPIRES_AT,
    JSON,
    MINT_URL,
    SAME_ORIGIN,
    SameOriginClient,
    answer,
    error_of,
)

REALTIME = "/gateway/realtime/"


class StalledGateway:
    """A ``responses`` callback that holds each mint until the test releases it."""

    def __init__(self, calls: int) -> None:
        self.entered = threading.Semaphore(0)
        self.releases = [threading.Event() for _ in range(calls)]
        self.counter = itertools.count()

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        index = next(self.counter)
        self.entered.release()
        assert self.releases[index].wait(10), "never released"
        body = {"token": f"vcst_stalled{index:04d}abcdefghijklmnop", "expiresAt": EXPIRES_AT}
        return 200, JSON, json.dumps(body)


@pytest.mark.django_db(transaction=True)
def test_the_call_beyond_the_limit_answers_503_at_once(
    gateway_mock: responses.RequestsMock,
    user: Any,
    same_origin: SameOriginClient,
    settings: Any,
) -> None:
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 2
    settings.GATEWAY_REALTIME_QUOTA = 10
    gateway = StalledGateway(calls=4)
    gateway_mock.add_callback(responses.POST, MINT_URL, callback=gateway)
    # One mint through the endpoint first, so the timing below measures the
    # refusal, not a cold start.
    gateway.releases[0].set()
    assert same_origin(REALTIME).status_code == 200
    assert gateway.entered.acquire(timeout=10)
    issued: list[Any] = []

    def mint() -> None:
        try:
            issued.append(mint_client_secret(user=user, kind="realtime"))
        finally:
            connection.close()

    threads = [threading.Thread(target=mint) for _ in range(2)]
    for thread in threads:
        thread.start()
        assert gateway.entered.acquire(timeout=10)
    try:
        # Two mints are in flight, each holding a thread on the Gateway.
        response = same_origin(REALTIME)
        assert response.status_code == 503, response.content
        assert response["Retry-After"] == "1"
        error = error_of(response)
        assert error["type"] == "gateway_busy"
        assert "at once" in error["message"]
        # Answered while the two in flight are still held: refused, not queued.
        assert len(gateway_mock.calls) == 1
        rejected = ClientSecretIssuance.objects.get(outcome=Outcome.REJECTED)
        assert rejected.error_type == "gateway_busy"
        assert rejected.completed_at is not None
        # The refused mint claimed nothing: the first and the two in flight count.
        assert QuotaCounter.objects.get(user=user).used == 3
    finally:
        # One at a time, so that SQLite's shared in-memory database sees one writer.
        for release, thread in zip(gateway.releases[1:3], threads, strict=True):
            release.set()
            thread.join(10)
    assert len(issued) == 2
    assert ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).count() == 3

    # The slots are free again.
    gateway.releases[3].set()
    assert same_origin(REALTIME).status_code == 200
    assert QuotaCounter.objects.get(user=user).used == 4


@pytest.mark.django_db
def test_a_full_bulkhead_raises_gateway_busy_without_calling_the_gateway(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any, mint_signals: list[Any]
) -> None:
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    settings.GATEWAY_REALTIME_QUOTA = 5
    answer(gateway_mock)
    with gateway_call_slot(), pytest.raises(GatewayBusy) as caught:
        mint_client_secret(user=user, kind="realtime")
    assert caught.value.retry_after == 1
    assert caught.value.error_type == "gateway_busy"
    assert len(gateway_mock.calls) == 0
    row = ClientSecretIssuance.objects.get()
    assert (row.outcome, row.error_type) == (Outcome.REJECTED, "gateway_busy")
    # Refused before the quota was asked: nothing was claimed.
    assert not QuotaCounter.objects.filter(user=user, used__gt=0).exists()
    assert [name for name, _ in mint_signals] == ["failed"]
    # Released on the way out, whatever happened.
    assert mint_client_secret(user=user, kind="realtime").token


@pytest.mark.django_db
def test_the_size_follows_the_setting(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any
) -> None:
    answer(gateway_mock)
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 3
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(gateway_call_slot())
        assert mint_client_secret(user=user, kind="realtime").token
        held.enter_context(gateway_call_slot())
        with pytest.raises(GatewayBusy):
            mint_client_secret(user=user, kind="realtime")
        settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 4
        assert mint_client_secret(user=user, kind="realtime").token


def test_a_failing_call_gives_its_slot_back(settings: Any) -> None:
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    for _ in range(3):
        with pytest.raises(RuntimeError), gateway_call_slot():
            raise RuntimeError("boom")
    with gateway_call_slot():
        pass


@pytest.mark.django_db(transaction=True)
def test_busy_under_asgi_too(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any
) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    # In a thread of its own: the browser tests leave an event loop running
    # in the main thread, where asyncio.run() refuses to start.
    pool = ThreadPoolExecutor(1)

    def run(coroutine: Any) -> Any:
        return pool.submit(asyncio.run, coroutine).result()

    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    answer(gateway_mock)
    client = AsyncClient(enforce_csrf_checks=True)
    client.force_login(user)
    headers = {"origin": SAME_ORIGIN["HTTP_ORIGIN"], "sec-fetch-site": "same-origin"}

    async def post() -> Any:
        return await client.post(
            REALTIME, data={"sessionConfig": {}}, content_type="application/json", headers=headers
        )

    try:
        with gateway_call_slot():
            busy = run(post())
        assert busy.status_code == 503, busy.content
        assert busy["Retry-After"] == "1"
        assert error_of(busy)["type"] == "gateway_busy"
        assert run(post()).status_code == 200
    finally:
        # The views ran in asgiref's thread and the loop in the pool's, and the
        # test client leaves their connections open: close them where they
        # live, so the test database can be dropped and none is left to the GC.
        run(sync_to_async(connections.close_all)())
        pool.submit(connections.close_all).result()
        pool.shutdown()


@pytest.mark.django_db
def test_a_refusal_writes_one_row_and_nothing_else(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any
) -> None:
    # Under a Gateway incident every mint after the first wave is refused:
    # each must cost one insert (and the usage ledger's counters: the user's
    # and the site's usage and failure rows), not a
    # claim, a row, a release and an update.
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    settings.GATEWAY_REALTIME_QUOTA = 5
    with gateway_call_slot():
        with pytest.raises(GatewayBusy):  # the day's ledger rows exist
            mint_client_secret(user=user, kind="realtime")
        with CaptureQueriesContext(connection) as queries, pytest.raises(GatewayBusy):
            mint_client_secret(user=user, kind="realtime")
    writes = [
        (query["sql"].split()[0].upper(), query["sql"].split('"')[1])
        for query in queries.captured_queries
        if query["sql"].split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}
    ]
    assert writes == [
        ("INSERT", "gateway_realtime_clientsecretissuance"),
        ("UPDATE", "gateway_realtime_dailyusage"),
        ("UPDATE", "gateway_realtime_dailyfailure"),
        ("UPDATE", "gateway_realtime_sitedailyusage"),
        ("UPDATE", "gateway_realtime_sitedailyfailure"),
    ]
    assert not QuotaCounter.objects.exists()
