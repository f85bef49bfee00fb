"""Gateway faults, end to end: the endpoint over real sockets to the emulator.

Each fault must give its documented status (503 + Retry-After for the
Gateway's rate limit, 504 for time-outs, 502 for the rest), reach the Gateway
exactly once (or, for a connection that never opened, the bounded connect
retries) and leave a completed audit row.
"""

import socket

import pytest
from django.test import override_settings
from django.urls import reverse
from urllib3.util import connection as urllib3_connection

from gateway_realtime.emulator import GatewayEmulator
from gateway_realtime.models import ClientSecretIssuance, Outcome
from tests.conftest import answer, error_of, gateway_error

REALTIME = reverse("gateway_realtime:realtime")
EMULATOR_KEY = "emulator-key"

# model -> (our status, error type, the Gateway's status in the audit row)
FAULTS = {
    "emulator/rate-limited": (503, "gateway_rate_limit_exceeded", 429),
    "emulator/missing": (502, "gateway_model_not_found", 404),
    "emulator/forbidden": (502, "gateway_forbidden", 403),
    "emulator/access-denied": (403, "gateway_access_policy_denied", 403),
    "emulator/not-found": (502, "gateway_not_found", 404),
    "emulator/invalid": (502, "gateway_invalid_request_error", 400),
    "emulator/auth-error": (502, "gateway_authentication_error", 401),
    "emulator/internal": (502, "gateway_internal_server_error", 500),
    "emulator/bad-gateway": (502, "gateway_response_error", 502),
    "emulator/html": (502, "gateway_response_error", 200),
    "emulator/malformed": (502, "gateway_response_error", 200),
    "emulator/no-token": (502, "gateway_response_error", 200),
    "emulator/empty-token": (502, "gateway_response_error", 200),
    "emulator/bad-expiry": (502, "gateway_response_error", 200),
    "emulator/bad-expiry-string": (502, "gateway_response_error", 200),
    "emulator/spaces-token": (502, "gateway_response_error", 200),
    "emulator/huge": (502, "gateway_response_error", 200),
    "emulator/redirect": (502, "gateway_response_error", 307),
    "emulator/drop": (502, "gateway_connection_error", None),
    # Headers later than READ_TIMEOUT.
    "emulator/slow-headers-1.5": (504, "gateway_timeout", None),
    # Headers at once, the body trickling past TOTAL_TIMEOUT.
    "emulator/slow-body-1.5": (504, "gateway_timeout", 200),
}


@pytest.fixture(scope="module")
def emulator():
    with GatewayEmulator(host="127.0.0.1", port=0, api_keys=(EMULATOR_KEY,)) as emu:
        yield emu


@pytest.fixture
def emu_settings(emulator):
    emulator.reset()
    with override_settings(
        GATEWAY_REALTIME_API_KEY=EMULATOR_KEY,
        GATEWAY_REALTIME_BASE_URL=emulator.base_url,
        GATEWAY_REALTIME_ALLOWED_MODELS={"realtime": [*FAULTS, "emulator/ok"]},
        GATEWAY_REALTIME_CONNECT_TIMEOUT=1.0,
        GATEWAY_REALTIME_READ_TIMEOUT=0.4,
        GATEWAY_REALTIME_TOTAL_TIMEOUT=0.6,
    ):
        yield emulator


def assert_completed_failure(error_type, upstream_status):
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.completed_at is not None
    assert row.latency_ms is not None
    assert row.error_type == error_type.removeprefix("gateway_")
    assert row.upstream_status == upstream_status
    assert row.token_fingerprint == ""
    return row


@pytest.mark.django_db
@pytest.mark.parametrize("model", list(FAULTS))
def test_emulated_fault(model, emu_settings, same_origin):
    status, error_type, upstream_status = FAULTS[model]
    response = same_origin(REALTIME, {"model": model})
    assert response.status_code == status, response.content
    assert error_of(response)["type"] == error_type
    assert "token" not in response.json()
    assert response["Cache-Control"] == "no-store, private"
    if status == 503:
        assert response["Retry-After"] == "7"
    # Exactly one request reached the Gateway: nothing retried, no redirect followed.
    assert [r.method for r in emu_settings.requests] == ["POST"]
    assert_completed_failure(error_type, upstream_status)


@pytest.mark.django_db
def test_the_pool_still_works_after_faults(emu_settings, same_origin):
    for model in ("emulator/drop", "emulator/slow-body-1.5", "emulator/internal"):
        same_origin(REALTIME, {"model": model})
    response = same_origin(REALTIME, {"model": "emulator/ok"})
    assert response.status_code == 200
    assert response.json()["token"] in emu_settings.issued


@pytest.fixture
def connection_attempts(monkeypatch):
    attempts = []
    real = urllib3_connection.create_connection

    def counting(address, *args, **kwargs):
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3_connection, "create_connection", counting)
    return attempts


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("host", "retries"),
    [
        pytest.param("127.0.0.1:{closed_port}", 0, id="refused"),
        pytest.param("127.0.0.1:{closed_port}", 2, id="refused-retried"),
        # .invalid never resolves (RFC 6761), so this needs no network.
        pytest.param("gateway.invalid", 1, id="dns"),
    ],
)
def test_an_unreachable_gateway_is_retried_a_bounded_number_of_times(
    host, retries, same_origin, connection_attempts
):
    with override_settings(
        GATEWAY_REALTIME_BASE_URL=f"http://{host.format(closed_port=closed_port())}/v4/ai",
        GATEWAY_REALTIME_CONNECT_RETRIES=retries,
    ):
        response = same_origin(REALTIME)
    assert response.status_code == 502
    assert error_of(response)["type"] == "gateway_connection_error"
    assert "could not be reached" in error_of(response)["message"]
    assert len(connection_attempts) == retries + 1
    assert_completed_failure("gateway_connection_error", None)


@pytest.mark.django_db
def test_a_listener_that_never_answers_times_out(same_origin):
    # A socket that listens with a full backlog and never accepts.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            with override_settings(
                GATEWAY_REALTIME_BASE_URL=f"http://127.0.0.1:{port}/v4/ai",
                GATEWAY_REALTIME_CONNECT_TIMEOUT=0.2,
                GATEWAY_REALTIME_READ_TIMEOUT=0.2,
                GATEWAY_REALTIME_CONNECT_RETRIES=0,
            ):
                response = same_origin(REALTIME)
        finally:
            for s in fillers:
                s.close()
    # Linux completes the handshake into the backlog, so this is a read time-out.
    assert response.status_code == 504
    assert error_of(response)["type"] == "gateway_timeout"
    assert_completed_failure("gateway_timeout", None)


# --- every status, with finer control through `responses` ----------------------

ERROR_STATUSES = [400, 401, 402, 403, 404, 405, 408, 409, 410, 413, 415, 422, 429, 451]
ERROR_STATUSES += [500, 501, 502, 503, 504, 507, 520, 599]
CONTRACT_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "forbidden",
    404: "not_found",
    429: "rate_limit_exceeded",
}


@pytest.mark.django_db
@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_every_error_status_with_a_contract_body(status, same_origin, gateway_mock):
    error_type = CONTRACT_TYPES.get(status, "server_trouble")
    body = gateway_error(error_type, f"status {status}", generation_id="gen_123")
    answer(gateway_mock, body, status, **{"Retry-After": "11"})
    response = same_origin(REALTIME)
    assert len(gateway_mock.calls) == 1
    expected_type = f"gateway_{CONTRACT_TYPES.get(status, 'internal_server_error')}"
    error = error_of(response)
    assert error["type"] == expected_type
    if status == 429:
        assert response.status_code == 503
        assert response["Retry-After"] == "11"
    else:
        assert response.status_code == 502
    # Upstream messages stay in the audit row, out of the browser's answer.
    assert f"status {status}" not in error["message"]
    row = assert_completed_failure(expected_type, status)
    assert row.generation_id == "gen_123"
    assert row.error_message.startswith(f"status {status}")


@pytest.mark.django_db
@pytest.mark.parametrize("status", ERROR_STATUSES)
@pytest.mark.parametrize(
    "body",
    [b"", b"<html>oops</html>", b'{"error": "flat string"}', b"[1,2]", b'{"error": {}}'],
    ids=["empty", "html", "flat", "array", "no-message"],
)
def test_every_error_status_with_a_body_off_the_contract(status, body, same_origin, gateway_mock):
    answer(gateway_mock, body, status)
    response = same_origin(REALTIME)
    assert len(gateway_mock.calls) == 1
    assert response.status_code == 502
    assert error_of(response)["type"] == "gateway_response_error"
    assert_completed_failure("gateway_response_error", status)


@pytest.mark.django_db
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(status, same_origin, gateway_mock):
    answer(gateway_mock, b"", status, Location="https://evil.test/")
    response = same_origin(REALTIME)
    assert len(gateway_mock.calls) == 1
    assert response.status_code == 502
    assert_completed_failure("gateway_response_error", status)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": None},
        {"token": 12345},
        {"token": ["vcst_a"]},
        {"token": "vcst_ok", "expiresAt": 0},
        {"token": "vcst_ok", "expiresAt": True},
        {"token": "vcst_ok", "expiresAt": "soon"},
        {"token": "vcst_has space"},
        {"token": "vcst_" + "a" * 5000},
        {"token": "vcst_new\nline"},
        {"token": "test-gateway-key"},  # the site's own credential echoed back
    ],
)
def test_a_200_without_a_usable_token(body, same_origin, gateway_mock, captured_logs):
    answer(gateway_mock, body)
    response = same_origin(REALTIME)
    assert len(gateway_mock.calls) == 1
    assert response.status_code == 502
    assert error_of(response)["type"] == "gateway_response_error"
    assert_completed_failure("gateway_response_error", 200)
    assert "test-gateway-key" not in response.content.decode()
    assert "test-gateway-key" not in captured_logs.text()


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_MAX_RESPONSE_BYTES=1024)
def test_an_oversized_body_under_a_lowered_cap(same_origin, gateway_mock):
    answer(gateway_mock, {"token": "vcst_big", "padding": "x" * 10_000})
    response = same_origin(REALTIME)
    assert len(gateway_mock.calls) == 1
    assert response.status_code == 502
    assert_completed_failure("gateway_response_error", 200)


@pytest.mark.django_db
def test_an_access_policy_denial_names_the_policy_in_the_audit_row_only(emu_settings, same_origin):
    response = same_origin(REALTIME, {"model": "emulator/access-denied"})
    assert response.status_code == 403
    body = response.content.decode()
    assert error_of(response)["type"] == "gateway_access_policy_denied"
    # The browser is told a policy refused, not which one or what it removed.
    assert "pol_emulator" not in body and "removed" not in body.lower()
    row = assert_completed_failure("gateway_access_policy_denied", 403)
    assert row.error_message == (
        "Access policy denied (policies: pol_emulator; removed models: "
        "emulator/access-denied; removed providers: emulator)"
    )
