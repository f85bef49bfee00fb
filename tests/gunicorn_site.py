"""Plumbing shared by the tests that run the site under gunicorn (load, stall)."""

import socket
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection


def services_or_skip(test):
    """Skip ``test`` (named in the reason) unless the suite runs on PostgreSQL and Redis."""
    backend = settings.CACHES["default"]["BACKEND"]
    if connection.vendor != "postgresql" or "redis" not in backend.lower():
        pytest.skip(
            f"the {test} test needs PostgreSQL and Redis: run `make test-services` "
            "(GATEWAY_REALTIME_TEST_SERVICES=1)"
        )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log):
    """The end of a gunicorn log file, for failure messages."""
    return Path(log.name).read_text(errors="replace")[-3000:]


def stop(process):
    """Terminate a server process; kill it if it has not exited in 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
