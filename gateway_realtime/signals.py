"""Signals sent after every mint attempt.

Receivers get the audit row (``issuance``), never the raw token: a receiver
that logs its arguments cannot leak a secret.

- ``client_secret_issued``: ``sender`` is the audit model; kwargs ``issuance``,
  ``user``, ``request`` (may be ``None``).
- ``client_secret_failed``: the same, plus ``error`` (the exception).

Sent once per transition of the circuit breaker, by the one process that
makes it (see ``gateway_realtime.breaker``):

- ``circuit_opened``: ``sender`` is ``None``; kwargs ``failures`` (failures
  counted in the window) and ``cooldown`` (seconds before a probe).
- ``circuit_closed``: ``sender`` is ``None``; a probe mint succeeded.
"""

from django.dispatch import Signal

client_secret_issued = Signal()
client_secret_failed = Signal()
circuit_opened = Signal()
circuit_closed = Signal()
