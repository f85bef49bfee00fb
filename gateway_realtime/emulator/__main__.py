"""Run the Gateway emulator from the command line.

    python -m gateway_realtime.emulator --host 127.0.0.1 --port 8787 --api-key KEY

Prints ``Gateway emulator listening on <base URL>`` once listening (with the
real port when ``--port 0``), runs until SIGINT or SIGTERM, then prints
``Gateway emulator stopped.``
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .server import FAULTS, GatewayEmulator, is_loopback_host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_realtime.emulator",
        description="A local stand-in for the Vercel AI Gateway realtime routes.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key (repeatable); default: $AI_GATEWAY_API_KEY, else emulator-key",
    )
    parser.add_argument(
        "--oidc-token",
        action="append",
        dest="oidc_tokens",
        default=[],
        metavar="TOKEN",
        help="accepted OIDC bearer token (repeatable)",
    )
    parser.add_argument("--team", help="require this team id or slug")
    parser.add_argument("--base-path", default="/v4/ai", help="default: %(default)s")
    parser.add_argument("--default-ttl", type=int, default=60, help="seconds; default: %(default)s")
    parser.add_argument("--max-ttl", type=int, default=3600, help="seconds; default: %(default)s")
    parser.add_argument("--tls-cert", help="PEM certificate; serve https/wss")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--stream-delay",
        type=float,
        default=0.03,
        help="seconds between scripted deltas; default: %(default)s",
    )
    parser.add_argument(
        "--mint-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds every successful mint waits before answering; default: %(default)s",
    )
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        metavar="N",
        help="make every Nth mint fail as --fail-with says; default: never",
    )
    parser.add_argument(
        "--fail-with",
        choices=FAULTS,
        default="503",
        help="503: answer 503 at once; hang: answer nothing for a minute; default: %(default)s",
    )
    parser.add_argument(
        "--allow-api-key-ws",
        action="store_true",
        help="let an API key open a WebSocket (server-side clients)",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow binding a non-loopback address"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until a stop signal, return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback_host(args.host):
        parser.error(f"refusing to bind {args.host!r}: loopback only unless --allow-remote")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    api_keys = args.api_keys or [os.environ.get("AI_GATEWAY_API_KEY") or "emulator-key"]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        emulator = GatewayEmulator(
            host=args.host,
            port=args.port,
            api_keys=api_keys,
            team=args.team,
            base_path=args.base_path,
            default_ttl=args.default_ttl,
            max_ttl=args.max_ttl,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            oidc_tokens=args.oidc_tokens,
            allow_api_key_ws=args.allow_api_key_ws,
            allow_remote=args.allow_remote,
            stream_delay=args.stream_delay,
            mint_delay=args.mint_delay,
            fail_every=args.fail_every,
            fail_with=args.fail_with,
        )
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        emulator.start()
    except OSError as exc:
        print(f"Gateway emulator could not listen: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"Gateway emulator listening on {emulator.base_url}", flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals.
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        print("Gateway emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
