"""Settings for the gunicorn site that ``tests/test_stall.py`` starts.

The test suite's own settings on PostgreSQL and Redis, pointed at the test
database the test process created and at its Gateway emulator, with short
deadlines and a short cool-down so the stall scenario fits in a minute. A
middleware names the worker process in each answer (``X-Worker-Pid``), so
the test can tell gunicorn's workers apart.
"""

import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

os.environ["GATEWAY_REALTIME_TEST_SERVICES"] = "1"

from tests.settings import *  # noqa: F403
from tests.settings import CACHES, DATABASES, MIDDLEWARE

DATABASES["default"]["NAME"] = os.environ["STALL_DB_NAME"]
DATABASES["default"]["CONN_MAX_AGE"] = 60
# This run's breaker state only, whatever earlier runs left in Redis.
CACHES["default"]["KEY_PREFIX"] = os.environ["STALL_CACHE_PREFIX"]

MIDDLEWARE = ["tests.stall_settings.worker_pid", *MIDDLEWARE]

GATEWAY_REALTIME_API_KEY = "emulator-key"
GATEWAY_REALTIME_BASE_URL = os.environ["STALL_GATEWAY_BASE_URL"]
if os.environ.get("STALL_MODEL"):
    # A fault model of the emulator (a trickling body, say) as the default.
    GATEWAY_REALTIME_DEFAULT_MODELS = {"realtime": os.environ["STALL_MODEL"]}
if os.environ.get("STALL_APP_DEFAULTS") != "1":
    # Tuned as docs/deployment.md says; without these, the app's defaults.
    GATEWAY_REALTIME_CONNECT_TIMEOUT = 1.0
    GATEWAY_REALTIME_READ_TIMEOUT = 1.5
    GATEWAY_REALTIME_TOTAL_TIMEOUT = float(os.environ["STALL_TOTAL_TIMEOUT"])
    GATEWAY_REALTIME_BREAKER_FAILURES = 5
    GATEWAY_REALTIME_BREAKER_WINDOW = 30
    GATEWAY_REALTIME_BREAKER_COOLDOWN = int(os.environ["STALL_BREAKER_COOLDOWN"])
    # 4 threads a worker: 3 may wait on the Gateway, one always serves pages.
    GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 3
# Limits on, as on a real site, high enough never to refuse the test.
GATEWAY_REALTIME_RATE = "10000/m"
GATEWAY_REALTIME_QUOTA = 100_000


def worker_pid(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    pid = str(os.getpid())

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Worker-Pid"] = pid
        return response

    return middleware
