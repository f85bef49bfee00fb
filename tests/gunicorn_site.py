"""Plumbing shared by the tests that run the site under gunicorn (load, stall)."""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
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


ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def gunicorn(
    settings_module: str,
    env: dict[str, str],
    *,
    workers: int,
    threads: int,
    graceful_timeout: int,
    worker_class: str = "gthread",
    ready: Callable[[str, "subprocess.Popen[bytes]", object], None],
) -> Iterator[tuple[str, object]]:
    """The test settings' site under gunicorn (gthread unless told) on a free port: (base URL, log).

    ``ready(base_url, process, log)`` returns once the site serves (or fails
    the test); the server is stopped on the way out.
    """
    port = free_port()
    environ = dict(os.environ, DJANGO_SETTINGS_MODULE=settings_module, **env)
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(workers),
                "--worker-class",
                worker_class,
                "--threads",
                str(threads),
                "--bind",
                f"127.0.0.1:{port}",
                "--graceful-timeout",
                str(graceful_timeout),
                "django.core.wsgi:get_wsgi_application()",
            ],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            ready(base_url, process, log)
            yield base_url, log
        finally:
            stop(process)
