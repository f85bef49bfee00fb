"""Signals sent after every mint attempt.

Receivers get the audit row (``issuance``), never the raw token: a receiver
that logs its arguments cannot leak a secret.

- ``client_secret_issued``: ``sender`` is the audit model; kwargs ``issuance``,
  ``user``, ``request`` (may be ``None``).
- ``client_secret_failed``: the same, plus ``error`` (the exception).
"""

from django.dispatch import Signal

client_secret_issued = Signal()
client_secret_failed = Signal()
