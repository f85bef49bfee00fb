"""The one path through which every client secret is minted.

The endpoint, the template tag and anything a site writes itself call
``mint_client_secret``; it validates the request against the site's settings,
writes the audit row before the Gateway is called, completes it afterwards
and sends the signals.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import Error as DatabaseError
from django.db import transaction
from django.utils import timezone

from gateway_realtime import breaker, usage
from gateway_realtime.bulkhead import gateway_call_slot
from gateway_realtime.client import get_client
from gateway_realtime.conf import app_settings, resolve_callable
from gateway_realtime.credentials import resolve_credential
from gateway_realtime.exceptions import (
    AuditUnavailable,
    GatewayBusy,
    GatewayConfigurationError,
    GatewayError,
    GatewayTimeoutError,
    GatewayUnavailable,
    LimitsUnavailable,
    MintRejected,
    MintRequestError,
    QuotaExceeded,
)
from gateway_realtime.limits import (
    Policy,
    QuotaClaim,
    certainly_not_issued,
    claim_quota,
    get_policy,
)
from gateway_realtime.models import (
    ClientSecretIssuance,
    Outcome,
    Source,
    token_fingerprint,
    token_hint,
)
from gateway_realtime.protocol import Kind, websocket_protocols
from gateway_realtime.signals import client_secret_failed, client_secret_issued

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest

logger = logging.getLogger("gateway_realtime")


@dataclass(frozen=True)
class IssuedSecret:
    """A freshly minted client secret, ready to hand to one browser."""

    token: str = field(repr=False)
    url: str
    expires_at: int | float | None
    kind: Kind
    model: str
    issuance: ClientSecretIssuance

    @property
    def protocols(self) -> list[str]:
        """The ``Sec-WebSocket-Protocol`` values a browser offers (contract section 4)."""
        return websocket_protocols(self.kind, self.token, team=app_settings.TEAM)

    def as_setup_response(self, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The body the AI SDK's realtime setup fetch expects (contract section 5)."""
        body: dict[str, Any] = {"token": self.token, "url": self.url}
        if self.expires_at is not None:
            body["expiresAt"] = self.expires_at
        if tools:
            body["tools"] = tools
        return body


def resolve_model(kind: Kind, model: str | None, policy: Policy | None = None) -> str:
    """The model to mint for: the kind's default, or an allowed one the caller named.

    ``policy`` (from ``limits.get_policy``) replaces the site's settings.
    """
    if policy is None:
        allowed = app_settings.allowed_models(kind)
        default = app_settings.default_model(kind)
    else:
        allowed = [m for m in [policy.default_model, *policy.allowed_models] if m]
        default = policy.default_model
    if model is None or model == "":
        if not default:
            raise GatewayConfigurationError(
                f"No model is configured for {kind.value}: set "
                f'GATEWAY_REALTIME_DEFAULT_MODELS["{kind.value}"].'
            )
        return default
    if model not in allowed:
        raise MintRequestError(
            "This model is not available here.", param="model", code="model_not_allowed"
        )
    return model


def resolve_lifetime(expires_in: int | None, policy: Policy | None = None) -> int | None:
    """Seconds to ask the Gateway for, or ``None`` to leave it to the Gateway."""
    maximum = app_settings.MAX_LIFETIME if policy is None else policy.max_lifetime
    if expires_in is None:
        expires_in = app_settings.DEFAULT_LIFETIME
        if expires_in is None:
            return None
        return min(int(expires_in), maximum)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise MintRequestError(
            "expiresAfterSeconds must be a whole number of seconds.",
            param="expiresAfterSeconds",
        )
    if not 1 <= expires_in <= maximum:
        raise MintRequestError(
            f"expiresAfterSeconds must be between 1 and {maximum}.",
            param="expiresAfterSeconds",
        )
    return expires_in


def resolve_tools(
    *, request: HttpRequest | None, user: Any, kind: Kind, model: str
) -> list[dict[str, Any]] | None:
    """Tools for the setup response from ``GATEWAY_REALTIME_TOOLS_FUNCTION``, validated."""
    hook = app_settings.TOOLS_FUNCTION
    if not hook:
        return None
    func = resolve_callable(hook)
    tools = func(request=request, user=user, kind=kind.value, model=model)
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(_is_tool(t) for t in tools):
        raise GatewayConfigurationError(
            "GATEWAY_REALTIME_TOOLS_FUNCTION must return None or a list of "
            '{"type": "function", "name": str, "description"?: str, "parameters": dict}.'
        )
    return tools


def _is_tool(tool: object) -> bool:
    return (
        isinstance(tool, dict)
        and tool.get("type") == "function"
        and isinstance(tool.get("name"), str)
        and bool(tool["name"])
        and isinstance(tool.get("description", ""), str)
        and isinstance(tool.get("parameters"), dict)
        and set(tool) <= {"type", "name", "description", "parameters"}
    )


def _client_ip(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client wants it to be.
    # Behind a proxy, set REMOTE_ADDR in a middleware you trust.
    if request is None:
        return None
    value = request.META.get("REMOTE_ADDR") or None
    if value is None:
        return None

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def mint_client_secret(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    kind: Kind | str,
    model: str | None = None,
    expires_in: int | None = None,
    request: HttpRequest | None = None,
    source: Source | str = Source.OTHER,
    timeout: float | None = None,
) -> IssuedSecret:
    """Mint one client secret for ``user`` and record it in the audit trail.

    ``model`` must be the kind's default (``None``) or one of its allowed
    models; ``expires_in`` at most ``GATEWAY_REALTIME_MAX_LIFETIME``.

    Raises ``MintRequestError`` for a request the site does not allow (nothing
    is written or sent), ``GatewayConfigurationError`` for a settings problem,
    and a ``GatewayError`` subclass when the Gateway fails; in the last two
    cases the audit row records the failure. The audit row is written before
    the Gateway is called (in one transaction with the quota claim: both or
    neither) and completed after it, so no token is ever issued without one.

    Limits (see ``gateway_realtime.limits``): the user's ``Policy`` decides the
    models, lifetime and quota. ``QuotaExceeded`` when the quota is used up
    (recorded as a ``rejected`` row; the Gateway is not called),
    ``LimitsUnavailable`` when the quota store is down and ``AuditUnavailable``
    when the audit row cannot be written: both fail closed, nothing is minted
    or handed out.

    Resilience: ``timeout`` is the Gateway call's whole deadline in seconds
    (default ``GATEWAY_REALTIME_TOTAL_TIMEOUT``; the template tag passes
    ``GATEWAY_REALTIME_TAG_TIMEOUT``), cut to the slow line after a call
    that ran out of time (see ``gateway_realtime.bulkhead``). ``GatewayBusy``
    when this process has ``GATEWAY_REALTIME_MAX_CONCURRENT_MINTS`` Gateway
    calls in flight and none ends within ``GATEWAY_REALTIME_BULKHEAD_WAIT``,
    ``GatewayUnavailable`` while the circuit breaker is open (see
    ``gateway_realtime.breaker``): both are asked before the quota, so a
    refusal is one ``rejected`` row, claims nothing and does not call the
    Gateway.
    """
    kind = Kind(kind)
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    policy = get_policy(user, kind, request)
    model = resolve_model(kind, model, policy)
    lifetime = resolve_lifetime(expires_in, policy)

    issuance = ClientSecretIssuance(
        user=user if authenticated else None,  # type: ignore[misc]
        username=user.get_username()[:150] if authenticated and user is not None else "",
        ip_address=_client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "") if request else "")[:512],
        kind=kind.value,
        model=model,
        source=Source(source),
        requested_lifetime=lifetime,
    )
    # The bulkhead and the breaker are asked first, so that a refusal costs
    # one insert (the ``rejected`` row) and claims nothing: under a Gateway
    # incident every mint after the first wave ends here, in milliseconds.
    # The slot is held from the quota claim to the Gateway's answer.
    gateway_call = ExitStack()
    try:
        slot = gateway_call.enter_context(gateway_call_slot(request))
        # After a time-out, the next call gets the slow line (a multiple of
        # the Gateway's recent latency) as its deadline: see bulkhead.py.
        timeout = slot.deadline(timeout)
        call = gateway_call.enter_context(
            breaker.guard(timeout, slow_after=slot.slow_call_threshold())
        )
    except (GatewayBusy, GatewayUnavailable) as error:
        gateway_call.close()
        _record_rejection(issuance, error)
        _send_failed(issuance, user, request, error)
        raise
    with gateway_call:
        try:
            claim = _claim_and_record(issuance, policy)
        except QuotaExceeded as error:
            _record_rejection(issuance, error)
            _send_failed(issuance, user, request, error)
            raise
        except LimitsUnavailable:
            logger.error(
                "Could not check the quota for a %s client secret; nothing was minted",
                kind.value,
                extra=_log_fields(issuance, outcome="rejected", error_type="limits_unavailable"),
            )
            raise

        started = time.monotonic()
        try:
            credential = resolve_credential(request)
            issuance.auth_method = credential.method
            # Only a deadline the caller chose is passed on, so that a site's own
            # client written before ``timeout`` existed keeps working elsewhere.
            deadline: dict[str, float] = {} if timeout is None else {"timeout": timeout}
            slot.sending()
            secret = get_client().mint(
                kind=kind, model=model, credential=credential, expires_in=lifetime, **deadline
            )
        except Exception as error:
            # Any failure completes the row, a bug or a custom client's own
            # exception too, so that no attempt stays "pending" for ever.
            if claim is not None and certainly_not_issued(error):
                claim.release()
            if isinstance(error, GatewayTimeoutError):
                slot.timed_out()
            elif isinstance(error, GatewayError) and error.status_code is not None:
                call.answered_in = slot.answered()
            _record_failure(issuance, error, started)
            _send_failed(issuance, user, request, error)
            raise
        call.answered_in = slot.answered()

    now = timezone.now()
    issuance.outcome = Outcome.ISSUED
    issuance.completed_at = now
    issuance.latency_ms = _elapsed_ms(started)
    issuance.upstream_status = secret.status
    issuance.token_fingerprint = token_fingerprint(secret.token)
    issuance.token_hint = token_hint(secret.token)
    if secret.expires_at is not None:
        issuance.expires_at = dt.datetime.fromtimestamp(secret.expires_at, tz=dt.UTC)
        # Clamped to the column's 32-bit range: a far-future expiresAt must
        # not make the audit write (and so the whole mint) fail.
        lifetime_left = round(secret.expires_at - now.timestamp())
        issuance.effective_lifetime = max(-(2**31), min(2**31 - 1, lifetime_left))
    try:
        _save(issuance, completing=True)
        usage.record_mint(issuance)
    except AuditUnavailable:
        # The secret exists on the Gateway but is not recorded as issued, so it
        # is dropped here: handing it out would break "no token without a row".
        logger.error(
            "Minted a %s client secret for %s but could not record it; it was discarded",
            kind.value,
            model,
            extra=_log_fields(issuance),
        )
        raise
    logger.info(
        "Minted a %s client secret for %s",
        kind.value,
        model,
        extra=_log_fields(issuance),
    )
    client_secret_issued.send(
        sender=ClientSecretIssuance, issuance=issuance, user=user, request=request
    )
    return IssuedSecret(
        token=secret.token,
        url=secret.url,
        expires_at=secret.expires_at,
        kind=kind,
        model=model,
        issuance=issuance,
    )


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


# What completing a row changes: the second write sends only these.
_COMPLETION_FIELDS = [
    "completed_at",
    "auth_method",
    "outcome",
    "error_type",
    "error_message",
    "upstream_status",
    "generation_id",
    "latency_ms",
    "expires_at",
    "effective_lifetime",
    "token_fingerprint",
    "token_hint",
]


def _claim_and_record(issuance: ClientSecretIssuance, policy: Policy) -> QuotaClaim | None:
    """Claim one mint from the user's quota and write the pending row: both or neither.

    Raises ``QuotaExceeded`` (nothing written), ``LimitsUnavailable`` when the
    claim fails and ``AuditUnavailable`` when the row cannot be written; a
    failed write rolls back the other, so no claim is ever left without its
    row, nor a row without its claim.
    """
    if issuance.user_id is None or policy.quota is None:
        # Nothing to claim: quotas are per user.
        _save(issuance)
        return None
    alias = app_settings.AUDIT_DATABASE
    try:
        # A savepoint inside a caller's transaction, so a failure leaves it usable.
        with transaction.atomic(using=alias):
            claim = claim_quota(issuance.user_id, policy)
            _write(issuance, alias)
    except DatabaseError as error:
        # Beginning or committing the transaction failed, so neither write was
        # kept (the key of a rolled-back row names nothing). The claim comes
        # first: a database that cannot start or keep it is the quota store
        # being down.
        issuance.pk = None
        raise LimitsUnavailable(
            f"The quota store could not be reached ({type(error).__name__})."
        ) from None
    return claim


def _save(issuance: ClientSecretIssuance, *, completing: bool = False) -> None:
    """Write the audit row (insert, or with ``completing`` its completion).

    The endpoint runs outside ATOMIC_REQUESTS, so the write is one statement
    that commits at once. Inside a caller's transaction it is a savepoint, so
    a failed write leaves that transaction usable. Sites that mint inside their own transaction can
    point GATEWAY_REALTIME_AUDIT_DATABASE at a second alias of the same
    database, so the audit trail does not roll back with their work.
    """
    alias = app_settings.AUDIT_DATABASE
    fields = _COMPLETION_FIELDS if completing else None
    if not transaction.get_connection(alias).in_atomic_block:
        # One statement commits on its own (autocommit): no BEGIN/COMMIT
        # round trips around it.
        _write(issuance, alias, fields)
        return
    try:
        with transaction.atomic(using=alias):
            _write(issuance, alias, fields)
    except DatabaseError as error:
        # Beginning or committing the savepoint failed.
        raise _audit_unavailable(issuance, error) from None


def _write(
    issuance: ClientSecretIssuance, alias: str, update_fields: list[str] | None = None
) -> None:
    """``save()`` the row, so a site's ``pre_save``/``post_save`` receivers run."""
    try:
        issuance.save(using=alias, update_fields=update_fields)
    except DatabaseError as error:
        raise _audit_unavailable(issuance, error) from None


def _audit_unavailable(issuance: ClientSecretIssuance, error: DatabaseError) -> AuditUnavailable:
    # Logged with the traceback: "unavailable" may also be a bug worth fixing.
    logger.error("Could not write the audit row", exc_info=error, extra=_log_fields(issuance))
    return AuditUnavailable(f"The audit trail could not be written ({type(error).__name__}).")


def _record_rejection(
    issuance: ClientSecretIssuance, error: MintRejected, *, completing: bool = False
) -> None:
    issuance.outcome = Outcome.REJECTED
    issuance.completed_at = timezone.now()
    issuance.latency_ms = 0
    issuance.error_type = error.error_type
    issuance.error_message = error.message[:500]
    _save(issuance, completing=completing)
    usage.record_mint(issuance)
    logger.warning(
        "Rejected a %s client secret for %s: %s",
        issuance.kind,
        issuance.model,
        issuance.error_type,
        extra=_log_fields(issuance),
    )


def _send_failed(
    issuance: ClientSecretIssuance,
    user: AbstractBaseUser | AnonymousUser | None,
    request: HttpRequest | None,
    error: Exception,
) -> None:
    client_secret_failed.send(
        sender=ClientSecretIssuance, issuance=issuance, user=user, request=request, error=error
    )


def _record_failure(issuance: ClientSecretIssuance, error: Exception, started: float) -> None:
    issuance.outcome = Outcome.FAILED
    issuance.completed_at = timezone.now()
    issuance.latency_ms = _elapsed_ms(started)
    issuance.error_type = getattr(error, "error_type", type(error).__name__)[:64]
    if isinstance(error, GatewayError | GatewayConfigurationError):
        message = getattr(error, "message", None) or str(error)
    else:
        # Only our own messages are known to hold no secrets.
        message = type(error).__name__
    issuance.error_message = message[:500]
    if isinstance(error, GatewayError):
        issuance.upstream_status = error.status_code
        issuance.generation_id = (error.generation_id or "")[:128]
    _save(issuance, completing=True)
    usage.record_mint(issuance)
    logger.warning(
        "Could not mint a %s client secret for %s: %s",
        issuance.kind,
        issuance.model,
        issuance.error_type,
        extra=_log_fields(issuance),
    )


def _log_fields(
    issuance: ClientSecretIssuance, *, outcome: str | None = None, error_type: str | None = None
) -> dict[str, Any]:
    """Structured fields for log records; never the token or the credential."""
    return {
        "gateway_realtime": {
            "issuance_id": issuance.pk,
            "user_id": issuance.user_id,
            "kind": issuance.kind,
            "model": issuance.model,
            "source": issuance.source,
            "outcome": outcome or issuance.outcome,
            "error_type": error_type or issuance.error_type or None,
            "upstream_status": issuance.upstream_status,
            "latency_ms": issuance.latency_ms,
            "token_hint": issuance.token_hint or None,
        }
    }
