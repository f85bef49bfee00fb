"""``make demo``: the example site and a local Gateway emulator, one command.

    python -m example_project.demo [--port 8000] [--host 127.0.0.1] [--relay]

Migrates the SQLite database, creates (or resets) the demo user, starts the
Gateway emulator on a free loopback port unless a real Gateway is configured,
and serves the site with Django's development server. Ctrl-C or SIGTERM
stops both, and says so.

``--relay`` (``make demo RELAY=1``) shows relay mode too (docs/relay.md): the
site is served by uvicorn (example_project.asgi) with the relay's WebSocket
routes, the emulator accepts the relay's header-authenticated sockets, and
the page has a second voice element that talks through the relay. It needs
the ``relay`` extra and uvicorn, which ``make demo RELAY=1`` installs.

A real Gateway is used when ``AI_GATEWAY_API_KEY`` is set and
``AI_GATEWAY_BASE_URL`` is unset or not a loopback address; then no emulator
is started and the page talks to Vercel.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import sys
from types import FrameType
from urllib.parse import urlsplit

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "realtime-demo"  # a loopback-only demo account

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

#: What ``--relay`` imports: the relay extra's Channels and websockets, and an ASGI server.
RELAY_MODULES = ("channels", "websockets", "uvicorn")


def uses_real_gateway(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the environment names a real Gateway (a key, and no loopback base URL)."""
    if not environ.get("AI_GATEWAY_API_KEY"):
        return False
    base_url = environ.get("AI_GATEWAY_BASE_URL")
    return not base_url or urlsplit(base_url).hostname not in LOOPBACK


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    # runserver and the cleanup below already handle Ctrl-C; a SIGTERM (from
    # `kill`, a process manager, a container stop) takes the same way out
    # instead of ending the process before the emulator is stopped.
    raise KeyboardInterrupt


def relay_missing() -> list[str]:
    """The modules ``--relay`` needs that are not installed."""
    return [name for name in RELAY_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_project.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--relay",
        action="store_true",
        help="serve with uvicorn and show relay mode too (needs the relay extra and uvicorn)",
    )
    args = parser.parse_args(argv)
    if args.relay and relay_missing():
        print(
            f"--relay needs {', '.join(relay_missing())}: "
            'pip install "django-gateway-realtime[relay]" uvicorn (or make demo RELAY=1)',
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)

    emulator = None
    if uses_real_gateway(os.environ):
        gateway_note = "the real Vercel AI Gateway (AI_GATEWAY_API_KEY is set)"
    else:
        from gateway_realtime.emulator import GatewayEmulator

        # A fresh key per run: nothing but this process knows it.
        api_key = "demo-" + secrets.token_urlsafe(16)
        emulator = GatewayEmulator(
            host="127.0.0.1",
            port=0,
            api_keys=(api_key,),
            stream_delay=0.05,
            # The relay opens its Gateway sockets with the key in a header.
            allow_api_key_ws=args.relay,
        ).start()
        # example_project.settings reads these when Django sets up, below.
        os.environ["AI_GATEWAY_BASE_URL"] = emulator.base_url
        os.environ["AI_GATEWAY_API_KEY"] = api_key
        os.environ.pop("AI_GATEWAY_TEAM", None)
        gateway_note = f"the local Gateway emulator at {emulator.base_url}"

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    if args.relay:
        os.environ["DEMO_RELAY"] = "1"  # the page shows the relayed element
    try:
        import django
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: DEMO_USERNAME})
        user.set_password(DEMO_PASSWORD)
        user.save()

        url = f"http://{args.host}:{args.port}/"
        served = " with relay mode, served by uvicorn" if args.relay else ""
        print(
            "\n"
            f"  django-gateway-realtime demo{served}, talking to {gateway_note}\n"
            f"  Open {url} and log in as\n"
            f"      username: {DEMO_USERNAME}\n"
            f"      password: {DEMO_PASSWORD}\n"
            "  The login page shows them too. Ctrl-C stops the site and the emulator.\n",
            flush=True,
        )
        if args.relay:
            import uvicorn

            # uvicorn handles Ctrl-C and SIGTERM itself and returns; the
            # emulator is stopped below. No reloader, as for runserver.
            uvicorn.run(
                "example_project.asgi:application",
                host=args.host,
                port=args.port,
                lifespan="off",
                log_level="info",
            )
        else:
            # No autoreloader: it would run this module again in a child
            # process and start a second emulator.
            call_command("runserver", f"{args.host}:{args.port}", use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        if emulator is not None:
            emulator.stop()
            print("Gateway emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
