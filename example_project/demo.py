"""``make demo``: the example site and a local Gateway emulator, one command.

    python -m example_project.demo [--port 8000] [--host 127.0.0.1]

Migrates the SQLite database, creates (or resets) the demo user, starts the
Gateway emulator on a free loopback port unless a real Gateway is configured,
and serves the site with Django's development server. Ctrl-C or SIGTERM
stops both, and says so.

A real Gateway is used when ``AI_GATEWAY_API_KEY`` is set and
``AI_GATEWAY_BASE_URL`` is unset or not a loopback address; then no emulator
is started and the page talks to Vercel.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from types import FrameType
from urllib.parse import urlsplit

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "realtime-demo"  # a loopback-only demo account

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_project.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)

    emulator = None
    if uses_real_gateway(os.environ):
        gateway_note = "the real Vercel AI Gateway (AI_GATEWAY_API_KEY is set)"
    else:
        from gateway_realtime.emulator import GatewayEmulator

        # A fresh key per run: nothing but this process knows it.
        api_key = "demo-" + secrets.token_urlsafe(16)
        emulator = GatewayEmulator(
            host="127.0.0.1", port=0, api_keys=(api_key,), stream_delay=0.05
        ).start()
        # example_project.settings reads these when Django sets up, below.
        os.environ["AI_GATEWAY_BASE_URL"] = emulator.base_url
        os.environ["AI_GATEWAY_API_KEY"] = api_key
        os.environ.pop("AI_GATEWAY_TEAM", None)
        gateway_note = f"the local Gateway emulator at {emulator.base_url}"

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
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
        print(
            "\n"
            f"  django-gateway-realtime demo, talking to {gateway_note}\n"
            f"  Open {url} and log in as\n"
            f"      username: {DEMO_USERNAME}\n"
            f"      password: {DEMO_PASSWORD}\n"
            "  The login page shows them too. Ctrl-C stops the site and the emulator.\n",
            flush=True,
        )
        # No autoreloader: it would run this module again in a child process
        # and start a second emulator.
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
