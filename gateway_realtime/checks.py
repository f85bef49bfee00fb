"""System checks for the ``GATEWAY_REALTIME_*`` settings (ids ``gateway_realtime.*``)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from gateway_realtime.conf import DEFAULTS, PREFIX, app_settings, resolve_callable
from gateway_realtime.protocol import REALTIME_APIS, Kind

KIND_NAMES = [k.value for k in Kind]


def _is_number(value: Any, minimum: float = 0) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > minimum


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every ``GATEWAY_REALTIME_*`` setting: its name is known and its value usable."""
    errors: list[CheckMessage] = _check_names()

    key = getattr(settings, PREFIX + "API_KEY", None)
    if key is not None and not (isinstance(key, str) or callable(key)):
        errors.append(
            Error(
                "GATEWAY_REALTIME_API_KEY must be a string or a callable.",
                hint="Set it to the key, or to a function that returns it.",
                id="gateway_realtime.E001",
            )
        )

    base_url = app_settings.BASE_URL
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        errors.append(
            Error(
                f"GATEWAY_REALTIME_BASE_URL {base_url!r} is not an http(s) URL.",
                hint=f"The default is {DEFAULTS['BASE_URL']!r}.",
                id="gateway_realtime.E003",
            )
        )
    elif parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        errors.append(
            Warning(
                "GATEWAY_REALTIME_BASE_URL uses plain http to a remote host: the credential "
                "and minted secrets would cross the network unencrypted.",
                hint="Use https:// (plain http is meant for the local emulator).",
                id="gateway_realtime.W002",
            )
        )

    team = getattr(settings, PREFIX + "TEAM", None)
    if team is not None and not isinstance(team, str):
        errors.append(
            Error(
                "GATEWAY_REALTIME_TEAM must be a string (team id or slug) or None.",
                hint="For example 'my-team'.",
                id="gateway_realtime.E004",
            )
        )

    for name in (
        "CONNECT_TIMEOUT",
        "READ_TIMEOUT",
        "TOTAL_TIMEOUT",
        "TAG_TIMEOUT",
        "SLOW_CALL_MIN",
    ):
        value = getattr(settings, PREFIX + name, DEFAULTS[name])
        if not _is_number(value):
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_{name} must be a positive number of seconds.",
                    hint=f"The default is {DEFAULTS[name]}.",
                    id="gateway_realtime.E005",
                )
            )

    extra = getattr(settings, PREFIX + "EXTRA_HEADERS", {})
    if not isinstance(extra, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and "\n" not in v and "\r" not in v
        for k, v in extra.items()
    ):
        errors.append(
            Error(
                "GATEWAY_REALTIME_EXTRA_HEADERS must map header names to single-line strings.",
                hint='For example {"x-request-source": "my-site"}.',
                id="gateway_realtime.E006",
            )
        )

    errors.extend(_check_models())
    errors.extend(_check_model_apis())
    errors.extend(_check_lifetimes())

    atomic_alias = app_settings.AUDIT_DATABASE
    if atomic_alias not in settings.DATABASES:
        errors.append(
            Error(
                f"GATEWAY_REALTIME_AUDIT_DATABASE {atomic_alias!r} is not in DATABASES.",
                hint="Name a database alias; the default is 'default'.",
                id="gateway_realtime.E009",
            )
        )

    errors.extend(
        _check_callable(
            "TOOLS_FUNCTION",
            app_settings.TOOLS_FUNCTION,
            hint="Give the dotted path of a function returning a list of tools or None.",
            id="gateway_realtime.E010",
        )
    )
    try:
        import_string(app_settings.CLIENT_CLASS)
    except ImportError:
        errors.append(
            Error(
                f"GATEWAY_REALTIME_CLIENT_CLASS {app_settings.CLIENT_CLASS!r} cannot be imported.",
                hint=f"The default is {DEFAULTS['CLIENT_CLASS']!r}.",
                id="gateway_realtime.E011",
            )
        )
    errors.extend(_check_limits())
    errors.extend(_check_resilience())
    return errors


def check_credential(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W001 when no Gateway credential is visible: a deployment check only.

    Registered with ``deploy=True``, so it runs under ``manage.py check --deploy``
    and not on every ``manage.py`` command. The recommended place for the key
    is the server's environment (``AI_GATEWAY_API_KEY``), which a developer's
    shell or a build step running ``migrate`` or ``collectstatic`` often does
    not have; warning there on every command taught people to ignore the
    warning. A missing credential at mint time is a ``configuration_error``.
    """
    if (
        getattr(settings, PREFIX + "API_KEY", None)
        or os.environ.get("AI_GATEWAY_API_KEY")
        or os.environ.get("VERCEL_OIDC_TOKEN")
        or app_settings.TRUST_VERCEL_OIDC_HEADER
    ):
        return []
    return [
        Warning(
            "No AI Gateway credential is configured: every mint will fail.",
            hint="Set GATEWAY_REALTIME_API_KEY or the AI_GATEWAY_API_KEY environment "
            "variable (or VERCEL_OIDC_TOKEN, from `vercel env pull`) where the site runs.",
            id="gateway_realtime.W001",
        )
    ]


def _check_names() -> list[CheckMessage]:
    """W005 for each ``GATEWAY_REALTIME_*`` setting this app does not read (a typo, an old name)."""
    warnings: list[CheckMessage] = []
    for name in dir(settings):
        if not name.startswith(PREFIX) or name.removeprefix(PREFIX) in DEFAULTS:
            continue
        close = difflib.get_close_matches(name.removeprefix(PREFIX), DEFAULTS, n=1)
        warnings.append(
            Warning(
                f"{name} is not a django-gateway-realtime setting; it is ignored.",
                hint=f"Did you mean {PREFIX}{close[0]}?"
                if close
                else "Check the spelling against the documented GATEWAY_REALTIME_* settings.",
                id="gateway_realtime.W005",
            )
        )
    return warnings


def _check_callable(name: str, value: Any, *, hint: str, id: str) -> list[CheckMessage]:
    """An error unless ``value`` is unset, a callable, or the dotted path of one."""
    if not value:
        return []
    try:
        resolve_callable(value)
    except (ImportError, TypeError):
        return [
            Error(
                f"GATEWAY_REALTIME_{name} {value!r} is not an importable callable.",
                hint=hint,
                id=id,
            )
        ]
    return []


def _kinds_text() -> str:
    quoted = [repr(kind) for kind in KIND_NAMES]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _check_model_mapping(name: str, value: Any) -> list[CheckMessage]:
    """E007 unless ``value`` is a mapping whose keys are all kinds, naming each bad key."""
    if not isinstance(value, Mapping):
        return [
            Error(
                f"GATEWAY_REALTIME_{name} must be a dict keyed by kind, not "
                f"{type(value).__name__}; the kinds are {_kinds_text()}.",
                hint='For example {"realtime": "openai/gpt-realtime-2"}.',
                id="gateway_realtime.E007",
            )
        ]
    errors: list[CheckMessage] = []
    for key in value:
        if key in KIND_NAMES:
            continue
        close = difflib.get_close_matches(key, KIND_NAMES, n=1) if isinstance(key, str) else []
        errors.append(
            Error(
                f"GATEWAY_REALTIME_{name} has {key!r}, which is not a kind; the kinds are "
                f"{_kinds_text()}.",
                hint=f"Did you mean {close[0]!r}?"
                if close
                else 'For example {"realtime": "openai/gpt-realtime-2"}.',
                id="gateway_realtime.E007",
            )
        )
    return errors


def _check_model_apis() -> list[CheckMessage]:
    """E022 unless ``REALTIME_API`` maps model ids to ``"live"`` or ``"realtime"``."""
    apis = getattr(settings, PREFIX + "REALTIME_API", {})
    if isinstance(apis, Mapping) and all(
        isinstance(model, str) and model and api in REALTIME_APIS for model, api in apis.items()
    ):
        return []
    return [
        Error(
            'GATEWAY_REALTIME_REALTIME_API must map model ids to "live" or "realtime".',
            hint='For example {"openai/gpt-live-2": "live"}: the route the realtime kind '
            "mints and opens that model on (openai/gpt-live-1 and 1.1 are Live already).",
            id="gateway_realtime.E022",
        )
    ]


def _check_models() -> list[CheckMessage]:
    models = getattr(settings, PREFIX + "DEFAULT_MODELS", {})
    allowed = getattr(settings, PREFIX + "ALLOWED_MODELS", {})
    errors = _check_model_mapping("DEFAULT_MODELS", models)
    errors += _check_model_mapping("ALLOWED_MODELS", allowed)
    if errors:
        return errors
    for kind, model in models.items():
        if not isinstance(model, str) or not model or not model.isprintable() or " " in model:
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_DEFAULT_MODELS[{kind!r}] must be a model id "
                    "like 'provider/model'.",
                    hint="For example 'openai/gpt-realtime-2'.",
                    id="gateway_realtime.E007",
                )
            )
    for kind, values in allowed.items():
        if not isinstance(values, list | tuple | set | frozenset) or not all(
            isinstance(v, str) and v for v in values
        ):
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_ALLOWED_MODELS[{kind!r}] must be a list of model ids.",
                    hint='For example ["openai/gpt-realtime-2"].',
                    id="gateway_realtime.E007",
                )
            )
    if not models:
        errors.append(
            Warning(
                "GATEWAY_REALTIME_DEFAULT_MODELS names no default model: the endpoints "
                "cannot mint.",
                hint="Set e.g. GATEWAY_REALTIME_DEFAULT_MODELS = "
                '{"realtime": "openai/gpt-realtime-2"}.',
                id="gateway_realtime.W003",
            )
        )
    return errors


def _check_lifetimes() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    maximum = getattr(settings, PREFIX + "MAX_LIFETIME", DEFAULTS["MAX_LIFETIME"])
    default = getattr(settings, PREFIX + "DEFAULT_LIFETIME", DEFAULTS["DEFAULT_LIFETIME"])
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        errors.append(
            Error(
                "GATEWAY_REALTIME_MAX_LIFETIME must be a positive whole number of seconds.",
                hint=f"The default is {DEFAULTS['MAX_LIFETIME']}.",
                id="gateway_realtime.E008",
            )
        )
        return errors
    if default is not None and (
        isinstance(default, bool) or not isinstance(default, int) or not 1 <= default <= maximum
    ):
        errors.append(
            Error(
                "GATEWAY_REALTIME_DEFAULT_LIFETIME must be None or whole seconds between 1 "
                "and GATEWAY_REALTIME_MAX_LIFETIME.",
                hint="None lets the Gateway choose the lifetime.",
                id="gateway_realtime.E008",
            )
        )
    return errors


def _is_whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_limits() -> list[CheckMessage]:
    # Imported here: limits imports the models, which are not ready when
    # checks.py is imported by AppConfig.ready().
    from gateway_realtime.limits import parse_rate

    errors: list[CheckMessage] = []
    rate = getattr(settings, PREFIX + "RATE", DEFAULTS["RATE"])
    if rate is not None:
        try:
            parse_rate(rate if isinstance(rate, str) else "")
        except ValueError:
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_RATE {rate!r} is not a rate like '10/min'.",
                    hint="Requests per period: '10/min', '3/s', '100/hour', or None for no limit.",
                    id="gateway_realtime.E012",
                )
            )
    quota = getattr(settings, PREFIX + "QUOTA", DEFAULTS["QUOTA"])
    period = getattr(settings, PREFIX + "QUOTA_PERIOD", DEFAULTS["QUOTA_PERIOD"])
    if (quota is not None and not _is_whole(quota, 0)) or not _is_whole(period, 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_QUOTA must be None or a whole number of mints, and "
                "GATEWAY_REALTIME_QUOTA_PERIOD a positive whole number of seconds.",
                hint=f"For example QUOTA = 200 and QUOTA_PERIOD = {DEFAULTS['QUOTA_PERIOD']}.",
                id="gateway_realtime.E013",
            )
        )
    errors.extend(
        _check_callable(
            "POLICY",
            getattr(settings, PREFIX + "POLICY", DEFAULTS["POLICY"]),
            hint="Give the dotted path of f(user, kind, request, policy) -> Policy | None.",
            id="gateway_realtime.E014",
        )
    )
    cache_alias = getattr(settings, PREFIX + "RATE_CACHE", DEFAULTS["RATE_CACHE"])
    caches = getattr(settings, "CACHES", {"default": {}})
    if cache_alias not in caches:
        errors.append(
            Error(
                f"GATEWAY_REALTIME_RATE_CACHE {cache_alias!r} is not in CACHES.",
                hint="Name a cache alias every worker shares (Redis in production).",
                id="gateway_realtime.E015",
            )
        )
    elif rate is not None and "locmem" in str(caches[cache_alias].get("BACKEND", "locmem")).lower():
        errors.append(
            Warning(
                "GATEWAY_REALTIME_RATE is counted in a local-memory cache: each worker "
                "process counts on its own, so the rate is multiplied by the worker count.",
                hint="Point GATEWAY_REALTIME_RATE_CACHE at a shared cache such as Redis.",
                id="gateway_realtime.W004",
            )
        )
    days = getattr(settings, PREFIX + "AUDIT_RETENTION_DAYS", DEFAULTS["AUDIT_RETENTION_DAYS"])
    if not _is_whole(days, 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_AUDIT_RETENTION_DAYS must be a positive whole number of days.",
                hint=f"The default is {DEFAULTS['AUDIT_RETENTION_DAYS']}.",
                id="gateway_realtime.E016",
            )
        )
    return errors


def _check_resilience() -> list[CheckMessage]:
    """The bulkhead's size and the circuit breaker's settings."""
    errors: list[CheckMessage] = []
    size = getattr(settings, PREFIX + "MAX_CONCURRENT_MINTS", DEFAULTS["MAX_CONCURRENT_MINTS"])
    if size is not None and not _is_whole(size, 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_MAX_CONCURRENT_MINTS must be a positive whole number "
                "of Gateway calls, or None.",
                hint="None (the default) sizes it from the process's request threads: one "
                "fewer, at most 4. A number is used as it is: at most the server's threads "
                "per process, so a stalled Gateway cannot hold them all.",
                id="gateway_realtime.E017",
            )
        )
    factor = getattr(settings, PREFIX + "SLOW_CALL_FACTOR", DEFAULTS["SLOW_CALL_FACTOR"])
    if not _is_number(factor, 1) and not (_is_number(factor) and factor == 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_SLOW_CALL_FACTOR must be a number of at least 1.",
                hint="A call is slow past this many times the Gateway's recent latency "
                f"(at least SLOW_CALL_MIN); the default is {DEFAULTS['SLOW_CALL_FACTOR']}.",
                id="gateway_realtime.E023",
            )
        )
    wait = getattr(settings, PREFIX + "BULKHEAD_WAIT", DEFAULTS["BULKHEAD_WAIT"])
    if wait is not None and not _is_number(wait, -1e-9):
        errors.append(
            Error(
                "GATEWAY_REALTIME_BULKHEAD_WAIT must be a number of seconds (0 or more), or None.",
                hint="None (the default) waits about twice the Gateway's recent latency "
                "for a call to end (at least 0.1 s, at most TOTAL_TIMEOUT); 0 refuses at once.",
                id="gateway_realtime.E026",
            )
        )
    rate = getattr(settings, PREFIX + "BREAKER_FAILURE_RATE", DEFAULTS["BREAKER_FAILURE_RATE"])
    if not _is_number(rate) or rate > 1:
        errors.append(
            Error(
                "GATEWAY_REALTIME_BREAKER_FAILURE_RATE must be a share of the calls, "
                "above 0 and at most 1.",
                hint=f"The default is {DEFAULTS['BREAKER_FAILURE_RATE']}: the circuit opens "
                "when half the calls in the window failed or were slow.",
                id="gateway_realtime.E018",
            )
        )
    calls = getattr(settings, PREFIX + "BREAKER_MIN_CALLS", DEFAULTS["BREAKER_MIN_CALLS"])
    if not _is_whole(calls, 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_BREAKER_MIN_CALLS must be a positive whole number of calls.",
                hint=f"The default is {DEFAULTS['BREAKER_MIN_CALLS']}.",
                id="gateway_realtime.E027",
            )
        )
    for name in ("BREAKER_WINDOW", "BREAKER_COOLDOWN"):
        if not _is_number(getattr(settings, PREFIX + name, DEFAULTS[name])):
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_{name} must be a positive number of seconds.",
                    hint=f"The default is {DEFAULTS[name]}.",
                    id="gateway_realtime.E028",
                )
            )
    alias = getattr(settings, PREFIX + "BREAKER_CACHE", DEFAULTS["BREAKER_CACHE"])
    if alias not in getattr(settings, "CACHES", {"default": {}}):
        errors.append(
            Error(
                f"GATEWAY_REALTIME_BREAKER_CACHE {alias!r} is not in CACHES.",
                hint="Name a cache alias every worker shares (Redis in production).",
                id="gateway_realtime.E019",
            )
        )
    seconds = getattr(settings, PREFIX + "ELEMENT_MAX_SECONDS", DEFAULTS["ELEMENT_MAX_SECONDS"])
    if not _is_number(seconds):
        errors.append(
            Error(
                "GATEWAY_REALTIME_ELEMENT_MAX_SECONDS must be a positive number of seconds.",
                hint="How long a voice, dictation or speech element may hold a session "
                f"before it hangs up; the default is {DEFAULTS['ELEMENT_MAX_SECONDS']}.",
                id="gateway_realtime.E020",
            )
        )
    return errors + _check_relay()


def _check_relay() -> list[CheckMessage]:
    """Relay mode's limits (``gateway_realtime.relay``)."""
    errors: list[CheckMessage] = []

    def setting(name: str) -> Any:
        return getattr(settings, PREFIX + name, DEFAULTS[name])

    sessions = setting("RELAY_MAX_SESSIONS")
    if sessions is not None and not _is_whole(sessions, 1):
        errors.append(
            Error(
                "GATEWAY_REALTIME_RELAY_MAX_SESSIONS must be a positive whole number or None.",
                hint="Relayed sessions one user may have open at once; None for no cap.",
                id="gateway_realtime.E021",
            )
        )
    for name in ("RELAY_QUEUE_FRAMES", "RELAY_MAX_FRAME_BYTES"):
        if not _is_whole(setting(name), 1):
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_{name} must be a positive whole number.",
                    hint=f"The default is {DEFAULTS[name]}.",
                    id="gateway_realtime.E021",
                )
            )
    for name in ("RELAY_MAX_SESSION_SECONDS", "RELAY_MAX_BEHIND_SECONDS", "RELAY_METER_INTERVAL"):
        if not _is_number(setting(name)):
            errors.append(
                Error(
                    f"GATEWAY_REALTIME_{name} must be a positive number of seconds.",
                    hint=f"The default is {DEFAULTS[name]}.",
                    id="gateway_realtime.E021",
                )
            )
    if not isinstance(setting("METRICS"), bool):
        errors.append(
            Error(
                "GATEWAY_REALTIME_METRICS must be True or False.",
                hint="The default is True: counted when prometheus-client is installed.",
                id="gateway_realtime.E025",
            )
        )
    interval = setting("LEDGER_FLUSH_INTERVAL")
    if not (_is_number(interval) or interval == 0) or isinstance(interval, bool):
        errors.append(
            Error(
                "GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL must be a number of seconds, 0 or more.",
                hint="The default is 1.0; 0 writes the usage ledger as each mint completes.",
                id="gateway_realtime.E024",
            )
        )
    budget = setting("RELAY_BUDGET")
    if budget is not None and (
        not isinstance(budget, dict)
        or not budget
        or not set(budget) <= {"audio_seconds", "tokens"}
        or not all(_is_number(value) for value in budget.values())
    ):
        errors.append(
            Error(
                "GATEWAY_REALTIME_RELAY_BUDGET must be None or a dict with "
                '"audio_seconds" and/or "tokens", each a positive number.',
                hint='For example {"audio_seconds": 1800}: per user and quota period.',
                id="gateway_realtime.E021",
            )
        )
    return errors


def check_breaker_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006 when the circuit breaker's state is in a local-memory cache: a deployment check.

    Registered with ``deploy=True`` (and the ``caches`` tag): local memory is
    what Django uses when ``CACHES`` is not set, so development would warn on
    every command.
    """
    alias = getattr(settings, PREFIX + "BREAKER_CACHE", DEFAULTS["BREAKER_CACHE"])
    caches = getattr(settings, "CACHES", {"default": {}})
    if alias not in caches:
        return []  # E019
    if "locmem" not in str(caches[alias].get("BACKEND", "locmem")).lower():
        return []
    return [
        Warning(
            "GATEWAY_REALTIME_BREAKER_CACHE is a local-memory cache: each worker process "
            "keeps its own circuit, so every worker must see the Gateway fail before it "
            "stops calling it.",
            hint="Point GATEWAY_REALTIME_BREAKER_CACHE at a cache every worker and host "
            "shares, such as Redis.",
            id="gateway_realtime.W006",
        )
    ]


def check_relay_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W007 when a site set up for Channels has no layer to revoke relayed sessions through.

    W008 when that layer is a channels_redis ``RedisChannelLayer`` whose Redis
    socket time-out would end an idle session's read (see
    ``_check_redis_layer_timeout``). Only where ``channels`` is in
    ``INSTALLED_APPS``: without it the relay is not in use, and nothing is said.
    """
    if "channels" not in getattr(settings, "INSTALLED_APPS", ()):
        return []
    alias = getattr(settings, PREFIX + "RELAY_CHANNEL_LAYER", DEFAULTS["RELAY_CHANNEL_LAYER"])
    layers = getattr(settings, "CHANNEL_LAYERS", {})
    if alias in layers:
        return _check_redis_layer_timeout(alias, layers[alias])
    return [
        Warning(
            f"GATEWAY_REALTIME_RELAY_CHANNEL_LAYER {alias!r} is not in CHANNEL_LAYERS: "
            "relayed sessions cannot be revoked (revoke_sessions, logout, deactivation, "
            "the admin action).",
            hint="Add a channel layer every process shares (channels_redis.core.RedisChannelLayer) "
            "under that alias, or name one you have.",
            id="gateway_realtime.W007",
        )
    ]


#: The ``socket_timeout`` docs/relay.md gives each Redis host of the relay's
#: channel layer: well above channels_redis's blocking read (5 s), and still
#: short enough that a Redis gone silent ends the read, so the session ends
#: with a close code, where ``None`` would leave it waiting for ever.
RELAY_REDIS_SOCKET_TIMEOUT = 10
#: How much longer than the blocking read the socket time-out must be: Redis
#: answers an expired blocking read on its next timer tick, and that answer
#: still has to cross the network.
BLOCKING_READ_MARGIN = 1

_UNSET = object()


def _host_socket_timeout(host: Any) -> Any:
    """The ``socket_timeout`` one ``CONFIG["hosts"]`` entry sets, or ``_UNSET``.

    Read as channels_redis decodes the entry (a URL, or a dict of redis-py
    keyword arguments whose ``address`` goes through
    ``ConnectionPool.from_url``) and redis-py then reads it: a
    ``socket_timeout`` in the URL's query overrides the dict's, and its first
    value counts. A value that is not a number is returned as it is.
    """
    if isinstance(host, str):
        host = {"address": host}
    if not isinstance(host, Mapping):
        return _UNSET  # a (host, port) pair, or channels_redis's default host
    address = host.get("address")
    if isinstance(address, str):
        values = parse_qs(urlsplit(address).query).get("socket_timeout")
        if values:
            try:
                return float(values[0])
            except ValueError:
                return values[0]
    return host.get("socket_timeout", _UNSET)


def _check_redis_layer_timeout(alias: str, layer: Any) -> list[CheckMessage]:
    """W008 for each Redis host whose socket time-out would end an idle session's read.

    A ``RedisChannelLayer`` (or a subclass) receives with a blocking read
    (``BZPOPMIN``) that Redis answers empty after ``brpop_timeout`` (5 s) when
    nothing came. redis-py 8 gives every connection a 5 s socket time-out by
    default (earlier releases none), so that read raises ``TimeoutError``
    first and the idle consumer dies (channels_redis issue 422, redis-py
    issue 4091; no release of either fixes it yet). A host passes when its
    ``socket_timeout``, its own or the installed redis-py's default, is
    ``None`` or at least ``BLOCKING_READ_MARGIN`` above the blocking read.
    The message names the host by index only: its URL may carry a password.
    """
    backend = layer.get("BACKEND") if isinstance(layer, Mapping) else None
    if not isinstance(backend, str):
        return []
    try:
        from channels_redis.core import RedisChannelLayer

        layer_class = import_string(backend)
    except ImportError:
        return []  # no channels_redis layer; a bad BACKEND is Channels' to report
    try:
        is_redis_layer = issubclass(layer_class, RedisChannelLayer)
    except TypeError:  # BACKEND names something other than a class
        return []
    if not is_redis_layer:
        return []
    blocking_read = layer_class.brpop_timeout
    config = layer.get("CONFIG") or {}
    hosts = config.get("hosts") if isinstance(config, Mapping) else None
    default = _redis_default_socket_timeout()
    warnings: list[CheckMessage] = []
    for index, host in enumerate(hosts or [None]):
        timeout = _host_socket_timeout(host)
        source = "its own"
        if timeout is _UNSET:
            timeout, source = default, "redis-py's default"
        if timeout is None or (
            _is_number(timeout) and timeout >= blocking_read + BLOCKING_READ_MARGIN
        ):
            continue
        warnings.append(
            Warning(
                f"CHANNEL_LAYERS[{alias!r}] host {index}: its Redis socket time-out "
                f"({timeout!r} s, {source}) is not at least {BLOCKING_READ_MARGIN} s longer "
                f"than channels_redis's {blocking_read} s blocking read, so that read times "
                "out and every relayed session idle that long ends.",
                hint=f'Give each host a longer one: {{"address": "redis://...", '
                f'"socket_timeout": {RELAY_REDIS_SOCKET_TIMEOUT}}} (docs/relay.md).',
                id="gateway_realtime.W008",
            )
        )
    return warnings


def _redis_default_socket_timeout() -> float | None:
    """The socket time-out the installed redis-py gives a connection that sets none.

    Read from a connection object (building one opens no socket) rather than
    inferred from redis-py's version: 5 s since redis-py 8, ``None`` before.
    """
    from redis.asyncio import Connection

    timeout: float | None = Connection().socket_timeout
    return timeout
