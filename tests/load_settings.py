"""Settings for the gunicorn site that ``tests/test_load.py`` starts.

The test suite's own settings on PostgreSQL and Redis, pointed at the test
database the test process created and at its Gateway emulator, with the
limits the load test checks. Everything variable comes from the environment
the test sets for gunicorn.
"""

import os

os.environ["GATEWAY_REALTIME_TEST_SERVICES"] = "1"

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["LOAD_DB_NAME"]
# Workers keep their connection: a new PostgreSQL login per mint is not the
# cost a real deployment pays.
DATABASES["default"]["CONN_MAX_AGE"] = 60

GATEWAY_REALTIME_API_KEY = "emulator-key"
GATEWAY_REALTIME_BASE_URL = os.environ["LOAD_GATEWAY_BASE_URL"]
GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": os.environ["LOAD_FAULT_MODELS"].split(",")}
GATEWAY_REALTIME_QUOTA = int(os.environ["LOAD_QUOTA"])
GATEWAY_REALTIME_QUOTA_PERIOD = int(os.environ["LOAD_QUOTA_PERIOD"])
GATEWAY_REALTIME_RATE = os.environ["LOAD_RATE"]
GATEWAY_REALTIME_RATE_KEY_PREFIX = os.environ["LOAD_RATE_KEY_PREFIX"]
GATEWAY_REALTIME_READ_TIMEOUT = float(os.environ["LOAD_READ_TIMEOUT"])
GATEWAY_REALTIME_TOTAL_TIMEOUT = 2.0
# The load test checks quotas and audit rows under a steady share of Gateway
# faults, not the circuit breaker: it must not open here.
GATEWAY_REALTIME_BREAKER_FAILURES = 1_000_000
# Nor the bulkhead: every thread (2 a worker) may mint, as a site that tunes it
# for its load would (the default, one fewer than the threads, would refuse
# the test's concurrent users with gateway_busy).
GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 2
