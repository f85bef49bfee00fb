"""A small RFC 6455 WebSocket endpoint (server side) over asyncio streams.

Only what the emulator needs: the opening-handshake helpers, reading masked
client frames (fragmented messages, interleaved control frames, a message
size cap), answering pings, and the close handshake. No extensions are
negotiated, so any RSV bit set by a client is a protocol error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from dataclasses import dataclass

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ConnectionClosed",
    "Message",
    "WebSocket",
    "accept_key",
    "is_valid_client_key",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

# RFC 6455 section 1.3: the fixed GUID appended to the client's key.
_HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Close codes a peer may put on the wire (section 7.4.1; 1005, 1006 and 1015
# are reserved for local reporting and must never be sent).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


def accept_key(client_key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a client's key."""
    digest = hashlib.sha1((client_key + _HANDSHAKE_GUID).encode("ascii")).digest()  # noqa: S324
    return base64.b64encode(digest).decode("ascii")


def is_valid_client_key(client_key: str) -> bool:
    """Whether ``Sec-WebSocket-Key`` is base64 of exactly 16 bytes."""
    try:
        return len(base64.b64decode(client_key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


class ConnectionClosed(Exception):
    """The WebSocket is closed; ``code`` is what the session ended with."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}{': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One complete data message: text (``str``) or binary (``bytes``)."""

    data: str | bytes

    @property
    def is_text(self) -> bool:
        return isinstance(self.data, str)


def _frame(opcode: int, payload: bytes) -> bytes:
    # Servers never mask (section 5.1), and we never fragment what we send.
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR through one big integer: much faster in CPython than a byte loop,
    # which matters for the load test's audio frames.
    if not payload:
        return payload
    length = len(payload)
    repeated = (mask * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(length, "big")


class WebSocket:
    """Server side of an accepted WebSocket connection.

    ``recv()`` returns the next data message, handling control frames on the
    way; it raises :class:`ConnectionClosed` once the close handshake is done
    or the peer vanished. Sends are serialised by a lock so that a pong can
    never land inside another frame.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_message_size: int = 256 * 1024,
        close_timeout: float = 2.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._send_lock = asyncio.Lock()
        self._close_sent = False
        self._closed_code: int | None = None
        self.messages_in = 0
        self.messages_out = 0

    @property
    def closed(self) -> bool:
        return self._closed_code is not None

    @property
    def close_code(self) -> int | None:
        """The code the session ended with, once it has ended."""
        return self._closed_code

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        await self._send(OP_TEXT, text.encode("utf-8"))
        self.messages_out += 1

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        await self._send(OP_BINARY, data)
        self.messages_out += 1

    async def _send(self, opcode: int, payload: bytes) -> None:
        if self._close_sent or self.closed:
            raise ConnectionClosed(self._closed_code or CLOSE_ABNORMAL, "already closing")
        async with self._send_lock:
            try:
                self._writer.write(_frame(opcode, payload))
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                self._closed_code = CLOSE_ABNORMAL
                raise ConnectionClosed(CLOSE_ABNORMAL, "peer went away") from exc

    async def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        payload = b""
        if code != CLOSE_NO_STATUS:
            payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
        async with self._send_lock:
            try:
                self._writer.write(_frame(OP_CLOSE, payload))
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                pass

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "", *, wait: bool = True) -> None:
        """Start the closing handshake and end the TCP stream.

        With ``wait`` it waits a little for the peer's close frame, as section
        7.1.1 asks the server to close TCP only after the handshake. Without
        it (failing a connection after a protocol error, when the byte stream
        can no longer be trusted) it closes at once.
        """
        if self.closed:
            return
        await self._send_close(code, reason)
        if wait:
            with contextlib.suppress(
                TimeoutError, ConnectionError, asyncio.IncompleteReadError, _ProtocolError
            ):
                await asyncio.wait_for(self._drain_until_close(), self._close_timeout)
        self._closed_code = code
        await self._shutdown()

    async def abort(self) -> None:
        """Drop the TCP connection without any close frame (fault injection)."""
        self._closed_code = CLOSE_ABNORMAL
        self._writer.transport.abort()

    async def _drain_until_close(self) -> None:
        while True:
            opcode, _fin, _payload = await self._read_frame()
            if opcode == OP_CLOSE:
                return

    async def _shutdown(self) -> None:
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except (ConnectionError, RuntimeError):
            pass

    async def _read_exactly(self, count: int) -> bytes:
        return await self._reader.readexactly(count)

    async def _read_frame(self) -> tuple[int, bool, bytes]:
        head = await self._read_exactly(2)
        first, second = head[0], head[1]
        fin = bool(first & 0x80)
        if first & 0x70:
            raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        opcode = first & 0x0F
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if not second & 0x80:
            raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read_exactly(8))
            if length >> 63:
                raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "bad frame length")
        if opcode in _CONTROL_OPCODES and (length > 125 or not fin):
            raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
        # Refuse before reading, so a huge declared length costs nothing.
        if length > self._max_message_size:
            raise _ProtocolError(CLOSE_TOO_BIG, "message too big")
        mask = await self._read_exactly(4)
        payload = _unmask(await self._read_exactly(length), mask)
        return opcode, fin, payload

    async def recv(self) -> Message:
        """Return the next complete data message."""
        if self.closed:
            raise ConnectionClosed(self._closed_code or CLOSE_ABNORMAL)
        try:
            return await self._recv()
        except _ProtocolError as exc:
            await self.close(exc.code, exc.reason, wait=False)
            raise ConnectionClosed(exc.code, exc.reason) from exc
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._closed_code = CLOSE_ABNORMAL
            await self._shutdown()
            raise ConnectionClosed(CLOSE_ABNORMAL, "peer went away") from exc

    async def _recv(self) -> Message:
        fragments: list[bytes] = []
        message_opcode: int | None = None
        size = 0
        while True:
            opcode, fin, payload = await self._read_frame()
            if opcode == OP_PING:
                await self._send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                await self._handle_close(payload)
                # _handle_close always raises; this keeps type checkers calm.
                raise ConnectionClosed(self._closed_code or CLOSE_NORMAL)
            if opcode == OP_CONTINUATION:
                if message_opcode is None:
                    raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
            elif message_opcode is not None:
                raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
            else:
                message_opcode = opcode
            size += len(payload)
            if size > self._max_message_size:
                raise _ProtocolError(CLOSE_TOO_BIG, "message too big")
            fragments.append(payload)
            if fin:
                break
        data = b"".join(fragments)
        self.messages_in += 1
        if message_opcode == OP_TEXT:
            try:
                return Message(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise _ProtocolError(CLOSE_INVALID_PAYLOAD, "text is not UTF-8") from exc
        return Message(data)

    async def _handle_close(self, payload: bytes) -> None:
        code = CLOSE_NO_STATUS
        reason = ""
        if len(payload) == 1:
            raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "bad close payload")
        if len(payload) >= 2:
            (code,) = struct.unpack("!H", payload[:2])
            valid = code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999
            if not valid:
                raise _ProtocolError(CLOSE_PROTOCOL_ERROR, "bad close code")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _ProtocolError(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8") from exc
        # Echo the peer's code (section 5.5.1), then end the TCP stream.
        await self._send_close(code, "")
        self._closed_code = code
        await self._shutdown()
        raise ConnectionClosed(code, reason)
