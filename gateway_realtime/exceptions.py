"""Errors raised while minting client secrets.

``GatewayError`` is the root of everything the Gateway (or the way to it) can
do wrong; there is one subclass per error ``type`` of the wire contract, plus
time-outs, connection failures and answers that break the contract.

Messages never contain the site's credential or a minted token: they are shown
in logs, error reports and the audit trail.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


class GatewayError(Exception):
    """Root of every failure to get a client secret from the Gateway."""

    #: The Gateway's error ``type`` this class stands for (or our own name).
    error_type = "gateway_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        param: Any = None,
        code: str | int | None = None,
        generation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.param = param
        self.code = code
        self.generation_id = generation_id

    def __str__(self) -> str:
        if self.status_code is not None:
            return f"{self.message} (HTTP {self.status_code}, {self.error_type})"
        return f"{self.message} ({self.error_type})"


class GatewayAuthenticationError(GatewayError):
    """The Gateway rejected the site's credential.

    A credential that is missing or malformed never reaches the Gateway: that
    is a ``GatewayConfigurationError``.
    """

    error_type = "authentication_error"


class GatewayInvalidRequestError(GatewayError):
    error_type = "invalid_request_error"


class GatewayRateLimitError(GatewayError):
    """The Gateway is rate limiting this site; ``retry_after`` in seconds if sent."""

    error_type = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class GatewayModelNotFoundError(GatewayError):
    error_type = "model_not_found"

    @property
    def model_id(self) -> str | None:
        if isinstance(self.param, dict):
            value = self.param.get("modelId")
            return value if isinstance(value, str) else None
        return None


class GatewayNotFoundError(GatewayError):
    error_type = "not_found"


class GatewayForbiddenError(GatewayError):
    """A Gateway policy rejected the request; ``rule_id`` names the rule."""

    error_type = "forbidden"

    @property
    def rule_id(self) -> str | None:
        if isinstance(self.param, dict):
            value = self.param.get("ruleId")
            return value if isinstance(value, str) else None
        return None


class GatewayAccessPolicyDeniedError(GatewayError):
    """A Gateway access policy does not allow the requested model or provider (HTTP 403).

    ``policy_ids``, ``removed_models`` and ``removed_providers`` are the
    lists of ``param`` (``@ai-sdk/gateway`` 4.0.147 and later), each empty
    when absent or malformed. They are added to the message, so the audit
    row and the log say which policy refused what; the browser is told only
    that a policy refused (policy ids are the site's business, not its
    users').
    """

    error_type = "access_policy_denied"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        details = [
            f"{label}: {', '.join(values)}"
            for label, values in (
                ("policies", self.policy_ids),
                ("removed models", self.removed_models),
                ("removed providers", self.removed_providers),
            )
            if values
        ]
        if details:
            self.message = f"{message} ({'; '.join(details)})"
            self.args = (self.message,)

    def _strings(self, key: str) -> list[str]:
        values = self.param.get(key) if isinstance(self.param, dict) else None
        if not isinstance(values, list):
            return []
        return [value for value in values if isinstance(value, str)]

    @property
    def policy_ids(self) -> list[str]:
        return self._strings("policyIds")

    @property
    def removed_models(self) -> list[str]:
        return self._strings("removedModels")

    @property
    def removed_providers(self) -> list[str]:
        return self._strings("removedProviders")


class GatewayInternalServerError(GatewayError):
    """The Gateway failed, or answered with an error type we do not know."""

    error_type = "internal_server_error"


class GatewayResponseError(GatewayError):
    """The Gateway's answer does not follow the contract (body, size, redirect)."""

    error_type = "response_error"


class GatewayTimeoutError(GatewayError):
    """Connecting, the headers or the whole body took longer than allowed."""

    error_type = "timeout"


class GatewayConnectionError(GatewayError):
    """The Gateway could not be reached (refused, DNS, TLS, reset)."""

    error_type = "connection_error"


#: The wire contract's error ``type`` values and the class for each.
ERROR_TYPES: dict[str, type[GatewayError]] = {
    "authentication_error": GatewayAuthenticationError,
    "invalid_request_error": GatewayInvalidRequestError,
    "rate_limit_exceeded": GatewayRateLimitError,
    "model_not_found": GatewayModelNotFoundError,
    "not_found": GatewayNotFoundError,
    "forbidden": GatewayForbiddenError,
    "access_policy_denied": GatewayAccessPolicyDeniedError,
}


# Deliberately NOT a GatewayError: a misconfigured site is a bug to fix in
# settings, not a Gateway outage to retry or to show as "try again later".
# Deriving from ImproperlyConfigured lets Django report it as what it is.
class GatewayConfigurationError(ImproperlyConfigured):
    """A ``GATEWAY_REALTIME_*`` setting, or the credential, is missing or wrong."""

    error_type = "configuration_error"


class MintRequestError(ValueError):
    """The caller asked for something this site does not allow (bad model, lifetime)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class MintRejected(Exception):
    """This site's own limits or safety rules refused a mint; the Gateway was not called.

    Deliberately outside ``GatewayError``: nothing went wrong upstream, and a
    caller that retries Gateway failures must not retry these blindly.
    ``retry_after`` is in seconds when known.
    """

    error_type = "rejected"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QuotaExceeded(MintRejected):
    """The user has used up their mints for the current quota period."""

    error_type = "quota_exceeded"


class AuditUnavailable(MintRejected):
    """The audit database could not be written, so no secret may be handed out."""

    error_type = "audit_unavailable"


class LimitsUnavailable(MintRejected):
    """The quota or rate store could not be reached; the limits fail closed."""

    error_type = "limits_unavailable"


class GatewayBusy(MintRejected):
    """``GATEWAY_REALTIME_MAX_CONCURRENT_MINTS`` Gateway calls are already in flight here.

    The bulkhead: this process refuses at once rather than hold one more
    server thread waiting on the Gateway.
    """

    error_type = "gateway_busy"


class GatewayUnavailable(MintRejected):
    """The circuit breaker is open: the Gateway has been failing, so it is not called.

    ``retry_after`` is what is left of the cool-down, in whole seconds (at least 1).
    """

    error_type = "gateway_unavailable"
