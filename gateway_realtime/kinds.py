"""The three kinds of Gateway realtime route and what differs between them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    REALTIME = "realtime"
    TRANSCRIPTION = "transcription"
    SPEECH = "speech"

    @property
    def route_kind(self) -> str | None:
        """The ``routeKind`` sent when minting; realtime sends none."""
        return None if self is Kind.REALTIME else self.value

    @property
    def ws_path(self) -> str:
        """The WebSocket route under the base URL."""
        return f"/{self.value}-model"

    @property
    def subprotocol(self) -> str:
        """The marker subprotocol the browser offers first."""
        return f"ai-gateway-{self.value}.v1"


KIND_CHOICES = [(kind.value, kind.value.capitalize()) for kind in Kind]


@dataclass(frozen=True)
class MintedSecret:
    """What the Gateway answered to a successful mint.

    The token is a short-lived bearer credential for one WebSocket; it is kept
    out of ``repr`` so that it does not end up in logs or error reports.
    """

    token: str
    expires_at: int | float | None
    url: str
    kind: Kind
    model: str
    #: The Gateway's HTTP status for the mint (recorded in the audit row).
    status: int = 200

    def __repr__(self) -> str:
        return (
            f"MintedSecret(kind={self.kind.value!r}, model={self.model!r}, "
            f"expires_at={self.expires_at!r}, token=<hidden>)"
        )
