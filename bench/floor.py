"""The design floor: the least a mint with this app's guarantees can cost.

Bench-only, PostgreSQL and Redis only, never part of the package. The view
keeps every write and round trip the issues require of a mint and does each
the cheapest way there is, without any of the checks, hooks, signals, logs or
error handling the real endpoint has:

- the same DRF view, session authentication and JSON parser and renderer as
  the no-op endpoint (so the framework's cost is the same as there);
- the burst rate: one Redis ``INCR`` on a raw redis-py client;
- the quota claim and the audit row written before the Gateway call: one
  PostgreSQL statement (a data-modifying CTE), so one round trip and one
  commit, on the raw psycopg connection under Django's;
- the Gateway call: ``http.client`` on a keep-alive connection per thread,
  headers and body built once;
- the audit row completed after the call: one ``UPDATE``, one commit.

Its ratio to (no-op + direct mint) is what the targets leave room for on the
machine the bench runs on: if even this misses ``overhead_ratio <= 1.3``, no
implementation that keeps a durable quota and an audit row before and after
each mint can meet it there. See docs/performance.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import math
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from rest_framework.request import Request
from rest_framework.response import Response

from bench.views import NoopView
from gateway_realtime.client import get_client
from gateway_realtime.credentials import resolve_credential
from gateway_realtime.models import ClientSecretIssuance, QuotaCounter
from gateway_realtime.protocol import MINT_PATH, Kind, build_ws_url
from gateway_realtime.throttling import _redis_client

KIND = Kind.REALTIME
QUOTA_PERIOD = 86400
_local = threading.local()
_prepared: dict[str, Any] = {}


def _tables() -> tuple[str, str]:
    return ClientSecretIssuance._meta.db_table, QuotaCounter._meta.db_table


def _setup() -> dict[str, Any]:
    if not _prepared:
        issuance, quota = _tables()
        model = settings.GATEWAY_REALTIME_MODELS[KIND.value]
        client = get_client()
        credential = resolve_credential(None)
        headers = client.build_headers(credential)
        body = client.build_body(KIND, model, settings.GATEWAY_REALTIME_DEFAULT_LIFETIME)
        headers["Content-Length"] = str(len(body))
        base_url = settings.GATEWAY_REALTIME_BASE_URL
        _prepared.update(
            model=model,
            headers=headers,
            body=body,
            address=urlsplit(base_url),
            ws_url=build_ws_url(base_url, KIND, model),
            redis=_redis_client(caches["default"]),
            claim_and_insert=(
                f"WITH claim AS (UPDATE {quota} SET used = used + 1 "
                "WHERE user_id = %s AND window_start = %s AND window_end = %s "
                "AND used < %s RETURNING 1) "
                f"INSERT INTO {issuance} (created_at, user_id, username, ip_address, "
                "user_agent, kind, model, source, requested_lifetime, auth_method, outcome, "
                "error_type, error_message, generation_id, token_fingerprint, token_hint) "
                "SELECT %s, %s, %s, %s, %s, %s, %s, 'endpoint', %s, '', 'pending', "
                "'', '', '', '', '' FROM claim RETURNING id"
            ),
            new_window=(
                f"INSERT INTO {quota} (user_id, window_start, window_end, used) "
                "VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING"
            ),
            complete=(
                f"UPDATE {issuance} SET completed_at = %s, auth_method = 'api-key', "
                "outcome = 'issued', upstream_status = 200, latency_ms = %s, "
                "expires_at = %s, effective_lifetime = %s, token_fingerprint = %s, "
                "token_hint = %s WHERE id = %s"
            ),
        )
    return _prepared


def _gateway(prepared: dict[str, Any]) -> dict[str, Any]:
    conn = getattr(_local, "conn", None)
    if conn is None:
        address = prepared["address"]
        conn = _local.conn = http.client.HTTPConnection(address.hostname, address.port)
    conn.request("POST", MINT_PATH, prepared["body"], prepared["headers"])
    response = conn.getresponse()
    data: dict[str, Any] = json.loads(response.read())
    return data


class DesignFloorView(NoopView):
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not isinstance(request.data, dict):
            return Response({"ok": False}, status=400)
        prepared = _setup()
        user = request.user
        now = time.time()
        prepared["redis"].incr(f"floor:{user.pk}:{math.floor(now / 60)}")
        start = math.floor(now / QUOTA_PERIOD) * QUOTA_PERIOD
        window = dt.datetime.fromtimestamp(start, tz=dt.UTC)
        window_end = window + dt.timedelta(seconds=QUOTA_PERIOD)
        created = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        connection.ensure_connection()
        raw = connection.connection
        params = [user.pk, window, window_end, 10**9, created, user.pk, user.get_username()]
        params += [request.META.get("REMOTE_ADDR"), request.META.get("HTTP_USER_AGENT", "")]
        params += [KIND.value, prepared["model"], settings.GATEWAY_REALTIME_DEFAULT_LIFETIME]
        row = raw.execute(prepared["claim_and_insert"], params).fetchone()
        if row is None:  # the first mint of this user's window
            raw.execute(prepared["new_window"], [user.pk, window, window_end])
            row = raw.execute(prepared["claim_and_insert"], params).fetchone()
        started = time.monotonic()
        answer = _gateway(prepared)
        token, expires_at = answer["token"], answer["expiresAt"]
        done = dt.datetime.now(dt.UTC)
        raw.execute(
            prepared["complete"],
            [
                done,
                round((time.monotonic() - started) * 1000),
                dt.datetime.fromtimestamp(expires_at, tz=dt.UTC),
                round(expires_at - done.timestamp()),
                hashlib.sha256(token.encode()).hexdigest(),
                token[:7],
                row[0],
            ],
        )
        return Response({"token": token, "url": prepared["ws_url"], "expiresAt": expires_at})
