"""Helpers for testing code that uses django-gateway-realtime, with no network.

Public API:

- ``FakeGatewayClient``: select it with
  ``GATEWAY_REALTIME_CLIENT_CLASS = "gateway_realtime.testing.FakeGatewayClient"``.
  It mints deterministic fake tokens (``vcst_fake000001...``), records every
  call in ``FakeGatewayClient.calls`` and can be told to fail with any
  ``GatewayError`` (``FakeGatewayClient.fail_with(...)``).
- ``fake_gateway()`` and ``emulated_gateway()``: context managers that switch
  the settings to the fake client or to a running ``GatewayEmulator`` (for
  ``unittest``-style tests).
- pytest fixtures ``gateway_realtime_fake`` and ``gateway_realtime_emulator``:
  enable them with ``pytest_plugins = ["gateway_realtime.testing"]`` in your
  root ``conftest.py``.

Every mint still goes through ``mint_client_secret``, so audit rows, signals
and your own policy code run as in production; tests that mint need database
access (``@pytest.mark.django_db``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.test import override_settings

from gateway_realtime.client import reset_clients
from gateway_realtime.conf import PREFIX, app_settings
from gateway_realtime.credentials import Credential
from gateway_realtime.exceptions import GatewayError
from gateway_realtime.protocol import (
    GatewayClientProtocol,
    Kind,
    MintedSecret,
    build_ws_url,
    is_live,
)

if TYPE_CHECKING:
    from gateway_realtime.emulator import GatewayEmulator

FAKE_CLIENT_PATH = "gateway_realtime.testing.FakeGatewayClient"
#: The credential the helpers configure when the site has none.
FAKE_API_KEY = "fake-gateway-key"
#: The API key the emulator fixture accepts.
EMULATOR_API_KEY = "emulator-key"


@dataclass(frozen=True)
class FakeMint:
    """One call to ``FakeGatewayClient.mint``: what was asked and what came of it.

    ``auth_method`` is the credential's method (``api-key`` or ``oidc``); the
    credential itself is never kept. ``token`` is ``None`` for a failed call.
    """

    kind: Kind
    model: str
    expires_in: int | None
    auth_method: str
    token: str | None
    expires_at: int | None
    error: GatewayError | None
    #: The deadline the caller passed (``None``: the default).
    timeout: float | None = None


class FakeGatewayClient:
    """A Gateway client that mints fake secrets in memory and records each call.

    State is kept on the class, so it is shared by the per-process instance
    that ``get_client()`` builds and by your test; call ``reset()`` between
    tests (the fixtures and context managers do).

    Tokens are ``vcst_fake<6-digit counter><16 hex>``, a function of the
    counter, kind and model only, so they are the same in every run.
    ``expiresAt`` is now plus the requested lifetime (``default_ttl`` when
    none was asked for).
    """

    default_ttl: ClassVar[int] = 60
    calls: ClassVar[list[FakeMint]] = []
    _failures: ClassVar[list[GatewayError]] = []
    _failure_forever: ClassVar[GatewayError | None] = None
    _counter: ClassVar[int] = 0
    _lock: ClassVar[threading.Lock] = threading.Lock()

    # The real client's interface ----------------------------------------------

    def mint(
        self,
        *,
        kind: Kind,
        model: str,
        credential: Credential,
        expires_in: int | None = None,
        timeout: float | None = None,
    ) -> MintedSecret:
        """Return a fake secret, or raise the error queued with ``fail_with``.

        ``timeout`` is accepted like the real client's and recorded in
        ``FakeMint.timeout``; the fake never waits.
        """
        cls = type(self)
        with cls._lock:
            error = cls._failures.pop(0) if cls._failures else cls._failure_forever
            if error is not None:
                cls.calls.append(
                    FakeMint(kind, model, expires_in, credential.method, None, None, error, timeout)
                )
                raise error
            FakeGatewayClient._counter += 1
            token = fake_token(FakeGatewayClient._counter, kind, model)
            expires_at = int(time.time()) + (expires_in or cls.default_ttl)
            cls.calls.append(
                FakeMint(
                    kind, model, expires_in, credential.method, token, expires_at, None, timeout
                )
            )
        return MintedSecret(
            token=token,
            expires_at=expires_at,
            url=build_ws_url(
                app_settings.BASE_URL,
                kind,
                model,
                live=is_live(kind, model, app_settings.REALTIME_API),
            ),
            kind=kind,
            model=model,
        )

    def close(self) -> None:
        """Nothing to close; present because ``reset_clients()`` calls it."""

    # Test controls ---------------------------------------------------------------

    @classmethod
    def fail_with(cls, error: GatewayError | None, *, times: int | None = 1) -> None:
        """Make the next ``times`` mints raise ``error`` (``times=None``: every mint).

        ``fail_with(None, times=None)`` stops failing.
        """
        with cls._lock:
            if times is None:
                cls._failure_forever = error
            elif error is not None:
                cls._failures.extend([error] * times)

    @classmethod
    def reset(cls) -> None:
        """Forget calls and queued failures, and restart the token counter."""
        with cls._lock:
            cls.calls.clear()
            cls._failures.clear()
            cls._failure_forever = None
            FakeGatewayClient._counter = 0

    @classmethod
    def tokens(cls) -> list[str]:
        """Every token issued so far, oldest first."""
        with cls._lock:
            return [call.token for call in cls.calls if call.token is not None]


if TYPE_CHECKING:
    # mypy checks here that the fake satisfies the protocol get_client() returns.
    _conforms: GatewayClientProtocol = FakeGatewayClient()


def fake_token(counter: int, kind: Kind | str, model: str) -> str:
    """The token ``FakeGatewayClient`` issues as its ``counter``-th mint."""
    digest = hashlib.sha256(f"{Kind(kind).value}:{model}:{counter}".encode()).hexdigest()
    return f"vcst_fake{counter:06d}{digest[:16]}"


def _needs_credential() -> bool:
    return not (getattr(settings, PREFIX + "API_KEY", None) or os.environ.get("AI_GATEWAY_API_KEY"))


@contextmanager
def fake_gateway() -> Iterator[type[FakeGatewayClient]]:
    """Use ``FakeGatewayClient`` inside the block; yields the class, reset.

    Sets ``GATEWAY_REALTIME_API_KEY`` to a fake key only when no credential is
    configured, so credential resolution runs as it would in production.
    """
    overrides: dict[str, Any] = {PREFIX + "CLIENT_CLASS": FAKE_CLIENT_PATH}
    if _needs_credential():
        overrides[PREFIX + "API_KEY"] = FAKE_API_KEY
    FakeGatewayClient.reset()
    reset_clients()
    try:
        with override_settings(**overrides):
            yield FakeGatewayClient
    finally:
        reset_clients()
        FakeGatewayClient.reset()


@contextmanager
def emulated_gateway(emulator: GatewayEmulator | None = None) -> Iterator[GatewayEmulator]:
    """Point the settings at a running ``GatewayEmulator`` inside the block.

    Starts one (loopback, random port, API key ``emulator-key``) when none is
    given, and stops it afterwards. The real ``GatewayClient`` is used, so
    the whole HTTP path is exercised.
    """
    from gateway_realtime.emulator import GatewayEmulator

    own = emulator is None
    emu = emulator or GatewayEmulator(host="127.0.0.1", port=0, api_keys=(EMULATOR_API_KEY,))
    if own:
        emu.start()
    api_key = sorted(emu.api_keys)[0]
    reset_clients()
    try:
        with override_settings(
            **{
                PREFIX + "BASE_URL": emu.base_url,
                PREFIX + "API_KEY": api_key,
                PREFIX + "TEAM": emu.team,
                PREFIX + "CLIENT_CLASS": "gateway_realtime.client.GatewayClient",
            }
        ):
            yield emu
    finally:
        reset_clients()
        if own:
            emu.stop()


# pytest plugin ----------------------------------------------------------------
# pytest is a test-time dependency only: importing this module (for the fake
# client setting) must work in production too.

try:
    import pytest
except ImportError:  # pragma: no cover - production without pytest
    pass
else:

    @pytest.fixture
    def gateway_realtime_fake() -> Iterator[type[FakeGatewayClient]]:
        """``FakeGatewayClient`` selected for this test; yields the class (reset)."""
        with fake_gateway() as fake:
            yield fake

    @pytest.fixture(scope="session")
    def gateway_realtime_emulator_server() -> Iterator[GatewayEmulator]:
        """One ``GatewayEmulator`` for the whole session (loopback, random port)."""
        from gateway_realtime.emulator import GatewayEmulator

        with GatewayEmulator(host="127.0.0.1", port=0, api_keys=(EMULATOR_API_KEY,)) as emu:
            yield emu

    @pytest.fixture
    def gateway_realtime_emulator(
        gateway_realtime_emulator_server: GatewayEmulator,
    ) -> Iterator[GatewayEmulator]:
        """The session's emulator, reset, with the settings pointing at it."""
        gateway_realtime_emulator_server.reset()
        with emulated_gateway(gateway_realtime_emulator_server) as emu:
            yield emu
