"""Waiting in the browser tests: for a condition in the page, or on the server's records.

Conditions are polled with ``page.evaluate`` rather than Playwright's
``wait_for_function``, whose predicate is compiled with eval, which the
strict-CSP pages forbid. A timeout is a failure, never a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(page: Any, expression: str, timeout: float = 20.0, recorded: str = "null") -> Any:
    """Poll ``expression`` in the page until it is truthy; return its value.

    On a timeout the failure shows ``recorded`` (an expression, e.g. the
    test's window.__voice) as the page holds it then.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            seen = page.evaluate(recorded)
            raise AssertionError(f"timed out waiting for {expression!r}; recorded: {seen!r}")
        time.sleep(0.05)


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (server-side records) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(0.05)
