"""Profile the mint endpoint in one process: ``python -m bench.profile [N]``.

Runs N same-origin mints through Django's test client against the emulator
(in a child process) under pyinstrument and prints where the time goes. Uses
the bench database as ``make bench`` left it (run that once first).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    path = sys.argv[2] if len(sys.argv) > 2 else "/api/realtime-token/realtime/"
    from bench.gateway import RemoteEmulator

    emulator = RemoteEmulator(api_keys=("emulator-key",))
    try:
        os.environ["BENCH_GATEWAY_BASE_URL"] = emulator.base_url
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
        if "BENCH_DATABASE_URL" not in os.environ and os.environ.get("BENCH_NO_SERVICES") != "1":
            from bench.run import PG_URL, reachable

            if reachable("127.0.0.1", 5432):
                os.environ["BENCH_DATABASE_URL"] = PG_URL
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.test import Client
        from pyinstrument import Profiler

        client = Client(HTTP_HOST="127.0.0.1")
        user, _ = get_user_model().objects.get_or_create(username="bench-profile")
        client.force_login(user)
        body = json.dumps({"sessionConfig": {}})
        headers = {"HTTP_ORIGIN": "http://127.0.0.1", "HTTP_SEC_FETCH_SITE": "same-origin"}

        def once() -> None:
            if path.startswith("/api/") or path.endswith("/noop/"):
                response = client.post(path, body, content_type="application/json", **headers)
            else:
                response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"{path} answered {response.status_code}: {response.content!r}")

        for _ in range(20):
            once()
        profiler = Profiler(interval=0.001)
        profiler.start()
        for _ in range(count):
            once()
        profiler.stop()
        print(
            profiler.output_text(
                unicode=True, color=False, show_all=os.environ.get("BENCH_PROFILE_ALL") == "1"
            )
        )
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
