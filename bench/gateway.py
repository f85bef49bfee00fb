"""The stand-in gateway in its own process, so its CPU is not the load generator's.

The package's emulator runs in a thread of whatever process starts it; here a
spawned child process hosts it and answers a few commands over a pipe, so the
bench can read ``tcp_connections`` while the emulator's event loop has a GIL
of its own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    from gateway_realtime.emulator import GatewayEmulator

    emulator = GatewayEmulator(**options).start()
    conn.send({"base_url": emulator.base_url, "origin": emulator.origin})
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(
                    {"tcp_connections": emulator.tcp_connections, "issued": len(emulator.issued)}
                )
            elif isinstance(command, tuple) and command[0] == "mint_delay":
                emulator.mint_delay = float(command[1])
                conn.send("ok")
            elif command == "reset":
                emulator.reset()
                conn.send("ok")
            elif command == "stop":
                break
    except EOFError:
        pass
    finally:
        emulator.stop()


class RemoteEmulator:
    """A ``GatewayEmulator`` in a child process; ``stats()`` and ``reset()`` reach it."""

    def __init__(self, **options: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, options), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the gateway emulator did not start within 30 s")
        info = self._conn.recv()
        self.base_url: str = info["base_url"]
        self.origin: str = info["origin"]

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def stats(self) -> dict[str, int]:
        self._conn.send("stats")
        return self._conn.recv()  # type: ignore[no-any-return]

    def tcp_connections(self) -> int:
        return self.stats()["tcp_connections"]

    def set_mint_delay(self, seconds: float) -> None:
        """How long every mint waits from now on (``GatewayEmulator.mint_delay``)."""
        self._conn.send(("mint_delay", seconds))
        self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send("stop")
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._conn.close()
