"""Settings for the ASGI site that ``tests/relay/test_multiprocess.py`` serves twice.

The test suite's own settings on PostgreSQL (the test database the test
process created), with a Redis channel layer shared by every process of the
run (its own key prefix, whatever earlier runs left in Redis), pointed at the
Gateway emulator the test process runs.
"""

import os

os.environ["GATEWAY_REALTIME_TEST_SERVICES"] = "1"

from tests.settings import *  # noqa: F403
from tests.settings import CACHES, DATABASES

DATABASES["default"]["NAME"] = os.environ["RELAY_SITE_DB_NAME"]
CACHES["default"]["KEY_PREFIX"] = os.environ["RELAY_SITE_PREFIX"]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The test process joins the same layer (test_multiprocess.channel_layers).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # As docs/relay.md configures it (check W008).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
            "prefix": os.environ["RELAY_SITE_PREFIX"],
        },
    }
}

GATEWAY_REALTIME_API_KEY = "emulator-key"
GATEWAY_REALTIME_BASE_URL = os.environ["RELAY_SITE_GATEWAY_BASE_URL"]
GATEWAY_REALTIME_RELAY_MAX_SESSIONS = int(os.environ["RELAY_SITE_MAX_SESSIONS"])
GATEWAY_REALTIME_POLICY = "tests.relay.site_policy.relay_policy"
# Small, so the test sees each server's usage in the shared counter soon.
GATEWAY_REALTIME_RELAY_METER_INTERVAL = 0.05
