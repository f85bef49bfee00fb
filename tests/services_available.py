"""Exit 0 when PostgreSQL and Redis answer, 3 (with the reason) when they do not.

``make test-services`` uses it to skip the services run on a laptop without
them; CI sets GATEWAY_REALTIME_REQUIRE_SERVICES=1, which turns absence into a
failure (exit 1) so a broken CI machine cannot pass by skipping.
"""

import os
import socket
import sys
from urllib.parse import urlsplit

TARGETS = {
    "PostgreSQL": os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
    "Redis": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
}


def main() -> int:
    missing = []
    for name, url in TARGETS.items():
        parts = urlsplit(url)
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=2).close()
        except OSError as err:
            missing.append(f"{name} at {parts.hostname}:{parts.port} ({err})")
    if not missing:
        return 0
    print("Services not reachable: " + "; ".join(missing), file=sys.stderr)
    if os.environ.get("GATEWAY_REALTIME_REQUIRE_SERVICES") == "1":
        return 1
    return 3


if __name__ == "__main__":
    sys.exit(main())
