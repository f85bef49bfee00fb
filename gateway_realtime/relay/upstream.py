"""Opening the Gateway's socket for one relayed session (the wire contract's section 6).

The URL is the client-secret socket's (``/realtime-model?ai-model-id=<model>``
on the base URL with http -> ws); authentication is the mint's headers
(``Authorization: Bearer <credential>``, ``ai-gateway-protocol-version``,
``ai-gateway-auth-method``, the team header, the user agent), with no
subprotocol. The credential goes into the handshake's headers and nowhere
else: ``websockets`` logs through a logger of ours that drops its debug
lines (which would print the headers), and failures are reported by type.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.views.decorators.debug import sensitive_variables
from websockets.asyncio.client import ClientConnection, connect

from gateway_realtime.client import GatewayClient, get_client
from gateway_realtime.conf import app_settings
from gateway_realtime.credentials import resolve_credential
from gateway_realtime.exceptions import GatewayConfigurationError
from gateway_realtime.protocol import Kind, build_ws_url, is_live

if TYPE_CHECKING:
    from gateway_realtime.credentials import Credential

#: The logger ``websockets`` writes to for the Gateway sockets; below INFO is dropped.
wire_logger = logging.getLogger("gateway_realtime.relay.wire")
wire_logger.addFilter(lambda record: record.levelno >= logging.INFO)

#: How long closing the Gateway socket may wait for the Gateway's close frame.
CLOSE_TIMEOUT = 2.0


class UpstreamUnavailable(Exception):
    """The Gateway socket could not be opened (the message names no credential)."""


@sensitive_variables("credential", "headers")
def gateway_headers(credential: Credential) -> dict[str, str]:
    """The mint's headers for a server socket: no Content-Type, no body headers."""
    client = get_client()
    build = getattr(client, "build_headers", None)
    headers: dict[str, str] = (
        build(credential) if callable(build) else GatewayClient().build_headers(credential)
    )
    return {name: value for name, value in headers.items() if name.lower() != "content-type"}


def gateway_url(model: str) -> str:
    """The realtime kind's socket for ``model``: the Live route for a Live model (section 8)."""
    live = is_live(Kind.REALTIME, model, app_settings.REALTIME_API)
    return build_ws_url(app_settings.BASE_URL, Kind.REALTIME, model, live=live)


@sensitive_variables("credential", "headers")
async def open_upstream(model: str, *, max_queue: int) -> ClientConnection:
    """Open the Gateway socket for ``model``; raise ``UpstreamUnavailable`` on any failure.

    ``max_queue`` bounds the frames ``websockets`` buffers from the Gateway
    before it stops reading the TCP stream (the Gateway then slows down).
    """
    try:
        credential = resolve_credential()
    except GatewayConfigurationError:
        raise UpstreamUnavailable("no Gateway credential is configured") from None
    headers = gateway_headers(credential)
    user_agent = next(
        (value for name, value in headers.items() if name.lower() == "user-agent"), None
    )
    headers = {name: value for name, value in headers.items() if name.lower() != "user-agent"}
    try:
        return await connect(
            gateway_url(model),
            additional_headers=headers,
            user_agent_header=user_agent,
            compression=None,
            proxy=None,
            open_timeout=app_settings.CONNECT_TIMEOUT + app_settings.READ_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            max_size=app_settings.RELAY_MAX_FRAME_BYTES,
            max_queue=max_queue,
            logger=wire_logger,
        )
    except Exception as error:
        # Not chained, and only the type: a handshake error may quote the request.
        raise UpstreamUnavailable(
            f"the Gateway socket did not open ({type(error).__name__})"
        ) from None
