"""Show the Gateway circuit breaker's state, or close it by hand (``--reset``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway_realtime.breaker import OPEN, circuit_state, reset_circuit
from gateway_realtime.conf import app_settings


class Command(BaseCommand):
    help = (
        "Print the state of the AI Gateway circuit breaker (closed, open with the "
        "seconds left, or half-open) and the failures in the current window; "
        "--reset closes it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Close the circuit and forget the counted failures.",
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        try:
            if reset:
                was_open = reset_circuit()
                self.stdout.write("Circuit reset (it was open)." if was_open else "Circuit reset.")
            state = circuit_state()
        except Exception as error:  # any cache backend's own errors
            raise CommandError(
                f"The breaker's cache {app_settings.BREAKER_CACHE!r} could not be read "
                f"({type(error).__name__})."
            ) from error
        line = f"state: {state.state}"
        if state.state == OPEN:
            line += f" ({state.seconds_left} s left)"
        elif state.probing:
            line += " (a probe mint is in flight)"
        self.stdout.write(line)
        self.stdout.write(
            f"failed or slow in window: {state.failures} of {state.calls} calls "
            f"within {app_settings.BREAKER_WINDOW:g} s (opens at "
            f"{app_settings.BREAKER_FAILURE_RATE:.0%} of at least "
            f"{app_settings.BREAKER_MIN_CALLS} calls)"
        )
