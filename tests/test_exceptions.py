"""``gateway_realtime.exceptions``: one root for Gateway failures, and what stays outside it."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_realtime.exceptions import (
    ERROR_TYPES,
    AuditUnavailable,
    GatewayConfigurationError,
    GatewayError,
    GatewayForbiddenError,
    GatewayModelNotFoundError,
    GatewayRateLimitError,
    LimitsUnavailable,
    MintRejected,
    MintRequestError,
    QuotaExceeded,
)


def test_every_contract_error_type_has_its_class() -> None:
    assert set(ERROR_TYPES) == {
        "authentication_error",
        "invalid_request_error",
        "rate_limit_exceeded",
        "model_not_found",
        "not_found",
        "forbidden",
        "access_policy_denied",  # @ai-sdk/gateway 4.0.147
    }
    for error_type, cls in ERROR_TYPES.items():
        assert issubclass(cls, GatewayError)
        assert cls.error_type == error_type


@pytest.mark.parametrize(
    "cls", [GatewayConfigurationError, MintRequestError, MintRejected, QuotaExceeded]
)
def test_what_is_not_a_gateway_failure_stays_outside_the_root(cls: type[Exception]) -> None:
    # A caller that retries Gateway failures must not retry these.
    assert not issubclass(cls, GatewayError)


def test_limits_unavailable_is_not_a_gateway_error() -> None:
    assert not issubclass(LimitsUnavailable, GatewayError)
    assert issubclass(AuditUnavailable, MintRejected)


def test_a_configuration_error_is_improperly_configured() -> None:
    assert issubclass(GatewayConfigurationError, ImproperlyConfigured)
    assert GatewayConfigurationError.error_type == "configuration_error"


def test_str_names_the_status_and_the_type() -> None:
    assert str(GatewayForbiddenError("no", status_code=403)) == "no (HTTP 403, forbidden)"
    assert str(GatewayError("down")) == "down (gateway_error)"
    assert str(GatewayError("odd", status_code=418, error_type="teapot")) == (
        "odd (HTTP 418, teapot)"
    )


@pytest.mark.parametrize(
    ("param", "model_id", "rule_id"),
    [
        ({"modelId": "a/b", "ruleId": "rule_1"}, "a/b", "rule_1"),
        ({"modelId": 5, "ruleId": None}, None, None),
        ("a/b", None, None),
        (None, None, None),
    ],
)
def test_ids_from_param_only_when_they_are_strings(
    param: object, model_id: str | None, rule_id: str | None
) -> None:
    assert GatewayModelNotFoundError("x", param=param).model_id == model_id
    assert GatewayForbiddenError("x", param=param).rule_id == rule_id


def test_retry_after_and_request_fields() -> None:
    assert GatewayRateLimitError("slow", retry_after=3).retry_after == 3
    assert QuotaExceeded("used up", retry_after=9).retry_after == 9
    error = MintRequestError("No.", param="model")
    assert (error.message, error.param, error.code) == ("No.", "model", "invalid_request")


def test_access_policy_denied_reads_its_lists_defensively():
    from gateway_realtime.exceptions import ERROR_TYPES, GatewayAccessPolicyDeniedError

    assert ERROR_TYPES["access_policy_denied"] is GatewayAccessPolicyDeniedError
    error = GatewayAccessPolicyDeniedError(
        "Access policy denied",
        status_code=403,
        param={"policyIds": ["a", 1, None, "b"], "removedModels": "not a list"},
    )
    assert (error.policy_ids, error.removed_models, error.removed_providers) == (["a", "b"], [], [])
    assert str(error) == "Access policy denied (policies: a, b) (HTTP 403, access_policy_denied)"
    bare = GatewayAccessPolicyDeniedError("Access policy denied", param=None)
    assert bare.message == "Access policy denied" and bare.policy_ids == []
