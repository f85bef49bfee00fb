"""``gateway_realtime.checks``: every check id fires, with a hint, and only when it should."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command

from gateway_realtime.checks import check_credential, check_settings


def key_function() -> str:
    return "key"


def tools_function(**kwargs: Any) -> None:
    return None


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


def test_good_settings_pass() -> None:
    assert check_settings() == []


def test_registered_with_django() -> None:
    messages = checks.run_checks(tags=[checks.Tags.security])
    assert not [m for m in messages if (m.id or "").startswith("gateway_realtime.")]


CASES: list[Any] = [
    pytest.param({"API_KEY": 12345}, "gateway_realtime.E001", id="E001-int"),
    pytest.param({"API_KEY": ["k"]}, "gateway_realtime.E001", id="E001-list"),
    pytest.param({"BASE_URL": "ftp://gateway.test/v4/ai"}, "gateway_realtime.E003", id="E003-ftp"),
    pytest.param({"BASE_URL": "gateway.test/v4/ai"}, "gateway_realtime.E003", id="E003-no-scheme"),
    pytest.param({"BASE_URL": "https://"}, "gateway_realtime.E003", id="E003-no-host"),
    pytest.param(
        {"BASE_URL": "http://gateway.example.com/v4/ai"}, "gateway_realtime.W002", id="W002"
    ),
    pytest.param({"TEAM": 7}, "gateway_realtime.E004", id="E004"),
    pytest.param({"CONNECT_TIMEOUT": 0}, "gateway_realtime.E005", id="E005-zero"),
    pytest.param({"CONNECT_TIMEOUT": -1}, "gateway_realtime.E005", id="E005-negative"),
    pytest.param({"READ_TIMEOUT": "10"}, "gateway_realtime.E005", id="E005-string"),
    pytest.param({"READ_TIMEOUT": True}, "gateway_realtime.E005", id="E005-bool"),
    pytest.param({"TOTAL_TIMEOUT": None}, "gateway_realtime.E005", id="E005-none"),
    pytest.param({"TAG_TIMEOUT": 0}, "gateway_realtime.E005", id="E005-tag-zero"),
    pytest.param({"MAX_CONCURRENT_MINTS": 0}, "gateway_realtime.E017", id="E017-zero"),
    pytest.param({"MAX_CONCURRENT_MINTS": 2.5}, "gateway_realtime.E017", id="E017-float"),
    pytest.param({"MAX_CONCURRENT_MINTS": "4"}, "gateway_realtime.E017", id="E017-string"),
    pytest.param({"BREAKER_FAILURE_RATE": 0}, "gateway_realtime.E018", id="E018-rate-zero"),
    pytest.param({"BREAKER_FAILURE_RATE": 1.5}, "gateway_realtime.E018", id="E018-rate-over-one"),
    pytest.param({"BREAKER_FAILURE_RATE": "0.5"}, "gateway_realtime.E018", id="E018-rate-string"),
    pytest.param({"SLOW_CALL_FACTOR": 0.5}, "gateway_realtime.E023", id="E023-factor-under-one"),
    pytest.param({"SLOW_CALL_FACTOR": True}, "gateway_realtime.E023", id="E023-factor-bool"),
    pytest.param({"BULKHEAD_WAIT": -1}, "gateway_realtime.E026", id="E026-negative"),
    pytest.param({"BULKHEAD_WAIT": "1"}, "gateway_realtime.E026", id="E026-string"),
    pytest.param({"BULKHEAD_WAIT": False}, "gateway_realtime.E026", id="E026-bool"),
    pytest.param({"BREAKER_MIN_CALLS": 0}, "gateway_realtime.E027", id="E027-zero"),
    pytest.param({"BREAKER_MIN_CALLS": True}, "gateway_realtime.E027", id="E027-bool"),
    pytest.param({"BREAKER_WINDOW": -5}, "gateway_realtime.E028", id="E028-window-negative"),
    pytest.param({"BREAKER_COOLDOWN": "15"}, "gateway_realtime.E028", id="E028-cooldown-string"),
    pytest.param({"BREAKER_CACHE": "nowhere"}, "gateway_realtime.E019", id="E019"),
    pytest.param({"ELEMENT_MAX_SECONDS": 0}, "gateway_realtime.E020", id="E020"),
    pytest.param({"ELEMENT_MAX_SECONDS": "long"}, "gateway_realtime.E020", id="E020-text"),
    pytest.param({"RELAY_MAX_SESSIONS": 0}, "gateway_realtime.E021", id="E021-sessions"),
    pytest.param({"RELAY_QUEUE_FRAMES": 0}, "gateway_realtime.E021", id="E021-queue"),
    pytest.param({"RELAY_MAX_FRAME_BYTES": "1M"}, "gateway_realtime.E021", id="E021-frame"),
    pytest.param({"RELAY_MAX_BEHIND_SECONDS": 0}, "gateway_realtime.E021", id="E021-behind"),
    pytest.param({"RELAY_METER_INTERVAL": "1s"}, "gateway_realtime.E021", id="E021-interval"),
    pytest.param({"REALTIME_API": {"m": "continuous"}}, "gateway_realtime.E022", id="E022"),
    pytest.param({"RELAY_MAX_SESSION_SECONDS": -1}, "gateway_realtime.E021", id="E021-length"),
    pytest.param({"RELAY_BUDGET": {"minutes": 5}}, "gateway_realtime.E021", id="E021-budget-key"),
    pytest.param({"RELAY_BUDGET": {"tokens": 0}}, "gateway_realtime.E021", id="E021-budget-zero"),
    pytest.param({"EXTRA_HEADERS": [("x-a", "b")]}, "gateway_realtime.E006", id="E006-list"),
    pytest.param({"EXTRA_HEADERS": {"x-a": 1}}, "gateway_realtime.E006", id="E006-int"),
    pytest.param(
        {"EXTRA_HEADERS": {"x-a": "b\r\nX-B: c"}}, "gateway_realtime.E006", id="E006-crlf"
    ),
    pytest.param(
        {"DEFAULT_MODELS": ["openai/gpt-realtime-2"]}, "gateway_realtime.E007", id="E007-list"
    ),
    pytest.param({"DEFAULT_MODELS": {"video": "x/y"}}, "gateway_realtime.E007", id="E007-kind"),
    pytest.param({"DEFAULT_MODELS": {"realtime": ""}}, "gateway_realtime.E007", id="E007-empty"),
    pytest.param({"DEFAULT_MODELS": {"realtime": "a b"}}, "gateway_realtime.E007", id="E007-space"),
    pytest.param({"DEFAULT_MODELS": {"realtime": 3}}, "gateway_realtime.E007", id="E007-int"),
    pytest.param(
        {"ALLOWED_MODELS": {"realtime": "openai/x"}}, "gateway_realtime.E007", id="E007-str-list"
    ),
    pytest.param({"ALLOWED_MODELS": {"realtime": [""]}}, "gateway_realtime.E007", id="E007-blank"),
    pytest.param({"ALLOWED_MODELS": {"realtime": 5}}, "gateway_realtime.E007", id="E007-int-list"),
    pytest.param({"ALLOWED_MODELS": {"tts": ["x/y"]}}, "gateway_realtime.E007", id="E007-akind"),
    pytest.param({"DEFAULT_MODELS": {}}, "gateway_realtime.W003", id="W003"),
    pytest.param({"MAX_LIFETIME": 0}, "gateway_realtime.E008", id="E008-max-zero"),
    pytest.param({"MAX_LIFETIME": "600"}, "gateway_realtime.E008", id="E008-max-string"),
    pytest.param({"MAX_LIFETIME": True}, "gateway_realtime.E008", id="E008-max-bool"),
    pytest.param({"DEFAULT_LIFETIME": 0}, "gateway_realtime.E008", id="E008-default-zero"),
    pytest.param({"DEFAULT_LIFETIME": 601}, "gateway_realtime.E008", id="E008-default-over"),
    pytest.param({"DEFAULT_LIFETIME": 1.5}, "gateway_realtime.E008", id="E008-default-float"),
    pytest.param({"AUDIT_DATABASE": "elsewhere"}, "gateway_realtime.E009", id="E009"),
    pytest.param({"TOOLS_FUNCTION": "tests.nowhere.tools"}, "gateway_realtime.E010", id="E010"),
    pytest.param({"TOOLS_FUNCTION": 42}, "gateway_realtime.E010", id="E010-not-callable"),
    pytest.param({"CLIENT_CLASS": "tests.nowhere.Client"}, "gateway_realtime.E011", id="E011"),
    pytest.param({"MODELS": {"realtime": "a/b"}}, "gateway_realtime.W005", id="W005-old-name"),
    pytest.param({"MAX_LIFETME": 60}, "gateway_realtime.W005", id="W005-typo"),
    pytest.param({"COLOUR": "blue"}, "gateway_realtime.W005", id="W005-unknown"),
]

#: Checks that run only under ``manage.py check --deploy``.
DEPLOY_CASES: list[Any] = [
    pytest.param({"API_KEY": None}, "gateway_realtime.W001", id="W001-none"),
    pytest.param({"API_KEY": ""}, "gateway_realtime.W001", id="W001-empty"),
]


@pytest.mark.parametrize(
    ("check", "overrides", "check_id"),
    [pytest.param(check_settings, *case.values, id=case.id) for case in CASES]
    + [pytest.param(check_credential, *case.values, id=case.id) for case in DEPLOY_CASES],
)
def test_bad_value(settings: Any, check: Any, overrides: dict[str, Any], check_id: str) -> None:
    for name, value in overrides.items():
        setattr(settings, "GATEWAY_REALTIME_" + name, value)
    messages = check()
    matching = [m for m in messages if m.id == check_id]
    assert matching, ids(messages)
    for message in matching:
        assert message.hint
        assert "GATEWAY_REALTIME_" in message.msg + message.hint
        expected_level = checks.WARNING if ".W" in check_id else checks.ERROR
        assert message.level == expected_level
    # One bad value, one complaint: the others stay quiet.
    assert set(ids(messages)) == {check_id}


@pytest.mark.parametrize(
    "overrides",
    [
        {"API_KEY": lambda: "key"},
        {"API_KEY": key_function},
        {"API_KEY": None, "TRUST_VERCEL_OIDC_HEADER": True},
        {"BASE_URL": "http://127.0.0.1:8765/v4/ai"},
        {"BASE_URL": "http://localhost:8765/v4/ai/"},
        {"BASE_URL": None},
        {"TEAM": "my-team"},
        {"TEAM": None},
        {"CONNECT_TIMEOUT": 1, "READ_TIMEOUT": 2.5, "TOTAL_TIMEOUT": 30},
        {"TAG_TIMEOUT": 0.5, "MAX_CONCURRENT_MINTS": 1},
        {"BREAKER_MIN_CALLS": 1, "BREAKER_WINDOW": 0.5, "BREAKER_COOLDOWN": 60},
        {"BREAKER_FAILURE_RATE": 1, "SLOW_CALL_FACTOR": 1, "SLOW_CALL_MIN": 3.0},
        {"BULKHEAD_WAIT": 0, "SLOW_CALL_FACTOR": 2.5},
        {"BULKHEAD_WAIT": 1.5},
        {"EXTRA_HEADERS": {"x-request-source": "site"}},
        {"DEFAULT_MODELS": {"speech": "elevenlabs/eleven-v3"}, "ALLOWED_MODELS": {}},
        {"ALLOWED_MODELS": {"realtime": ("a/b", "c/d")}},
        {"DEFAULT_LIFETIME": 600, "MAX_LIFETIME": 600},
        {"DEFAULT_LIFETIME": None},
        {"TOOLS_FUNCTION": "tests.test_checks.tools_function"},
        {"TOOLS_FUNCTION": tools_function},
        {"CLIENT_CLASS": "tests.test_client.CustomClient"},
    ],
)
def test_good_values(settings: Any, overrides: dict[str, Any]) -> None:
    for name, value in overrides.items():
        setattr(settings, "GATEWAY_REALTIME_" + name, value)
    assert check_settings() == []
    assert check_credential() == []


@pytest.mark.parametrize(
    "variable", ["AI_GATEWAY_API_KEY", "VERCEL_OIDC_TOKEN"], ids=lambda v: f"env-{v}"
)
def test_environment_credentials_silence_w001(
    settings: Any, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    monkeypatch.setenv(variable, "something")
    assert check_credential() == []


def test_on_vercel_the_oidc_header_silences_w001(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    monkeypatch.setenv("VERCEL", "1")
    assert check_credential() == []


def test_missing_credential_is_silent_in_plain_check(settings: Any) -> None:
    # The key often lives only in the server's environment: commands run
    # elsewhere (migrate, collectstatic, a developer's shell) stay quiet.
    settings.GATEWAY_REALTIME_API_KEY = None
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "gateway_realtime" not in out.getvalue() + err.getvalue()
    assert "System check identified" in out.getvalue() + err.getvalue()


# Only the security tag: other deploy checks depend on the environment (the
# browser tests set DJANGO_ALLOW_ASYNC_UNSAFE, an error under --deploy).
def test_missing_credential_warns_under_check_deploy(settings: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    out, err = StringIO(), StringIO()
    call_command("check", deploy=True, tags=["security"], stdout=out, stderr=err)
    assert "gateway_realtime.W001" in err.getvalue()
    deploy_ids = ids(checks.run_checks(include_deployment_checks=True, tags=["security"]))
    assert deploy_ids.count("gateway_realtime.W001") == 1


def test_a_credential_silences_check_deploy(settings: Any) -> None:
    out, err = StringIO(), StringIO()
    call_command("check", deploy=True, tags=["security"], stdout=out, stderr=err)
    assert "gateway_realtime" not in out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("MODELS", "GATEWAY_REALTIME_DEFAULT_MODELS"),
        ("API_KEY_FUNCTION", "GATEWAY_REALTIME_API_KEY"),
        ("THROTTLE_CACHE", "GATEWAY_REALTIME_RATE_CACHE"),
        ("MAX_LIFETME", "GATEWAY_REALTIME_MAX_LIFETIME"),
    ],
)
def test_unknown_setting_names_the_closest_known_one(
    settings: Any, name: str, suggestion: str
) -> None:
    setattr(settings, "GATEWAY_REALTIME_" + name, 1)
    (message,) = check_settings()
    assert message.id == "gateway_realtime.W005"
    assert message.msg.startswith(f"GATEWAY_REALTIME_{name} is not")
    assert message.hint == f"Did you mean {suggestion}?"


def test_unknown_setting_without_a_close_name(settings: Any) -> None:
    settings.GATEWAY_REALTIME_COLOUR = "blue"
    (message,) = check_settings()
    assert "Did you mean" not in message.hint


@pytest.mark.parametrize(
    ("name", "value", "expected", "hint"),
    [
        (
            "DEFAULT_MODELS",
            {"video": "x/y"},
            "GATEWAY_REALTIME_DEFAULT_MODELS has 'video', which is not a kind; "
            "the kinds are 'realtime', 'transcription' and 'speech'.",
            'For example {"realtime": "openai/gpt-realtime-2"}.',
        ),
        (
            "ALLOWED_MODELS",
            {"transcribe": ["x/y"]},
            "GATEWAY_REALTIME_ALLOWED_MODELS has 'transcribe', which is not a kind; "
            "the kinds are 'realtime', 'transcription' and 'speech'.",
            "Did you mean 'transcription'?",
        ),
        (
            "DEFAULT_MODELS",
            ["openai/gpt-realtime-2"],
            "GATEWAY_REALTIME_DEFAULT_MODELS must be a dict keyed by kind, not list; "
            "the kinds are 'realtime', 'transcription' and 'speech'.",
            'For example {"realtime": "openai/gpt-realtime-2"}.',
        ),
    ],
)
def test_e007_names_the_bad_key(
    settings: Any, name: str, value: Any, expected: str, hint: str
) -> None:
    setattr(settings, "GATEWAY_REALTIME_" + name, value)
    (message,) = check_settings()
    assert (message.id, message.msg, message.hint) == ("gateway_realtime.E007", expected, hint)


def test_e007_once_per_bad_key(settings: Any) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {"realtime": "a/b", "video": "x/y", "tts": "x/z"}
    messages = check_settings()
    assert [m.id for m in messages] == ["gateway_realtime.E007"] * 2
    assert ["'video'" in messages[0].msg, "'tts'" in messages[1].msg] == [True, True]


@pytest.mark.django_db
def test_migrate_runs_without_a_credential(settings: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    call_command("migrate", verbosity=0, stdout=StringIO(), stderr=StringIO())


def test_every_check_id_is_tested() -> None:
    import re
    from pathlib import Path

    import gateway_realtime.checks

    source = Path(gateway_realtime.checks.__file__).read_text()
    check_ids = set(re.findall(r'id="(gateway_realtime\.[EW]\d{3})"', source))
    assert check_ids
    tests_text = "".join(
        p.read_text()
        for p in Path(__file__).parent.glob("test_*.py")
        if p.name != Path(__file__).name
    )
    here = {case.values[1] for case in CASES + DEPLOY_CASES}
    untested = {i for i in check_ids if i not in here and f'"{i}"' not in tests_text}
    assert untested == set()


@pytest.mark.parametrize(
    "value",
    [{"openai/gpt-live-2": "continuous"}, ["openai/gpt-live-2"], {"": "live"}, {"m": None}],
)
def test_e022_model_apis_must_map_models_to_a_route(settings, value) -> None:
    from gateway_realtime.checks import check_settings

    settings.GATEWAY_REALTIME_REALTIME_API = value
    assert "gateway_realtime.E022" in [m.id for m in check_settings()]
    settings.GATEWAY_REALTIME_REALTIME_API = {"openai/gpt-live-2": "live", "x/y": "realtime"}
    assert "gateway_realtime.E022" not in [m.id for m in check_settings()]
