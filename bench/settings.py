"""The bench site: the app as docs/deployment.md recommends running it on 2 cores.

Set by ``bench.run``: BENCH_DATABASE_URL (PostgreSQL), BENCH_REDIS_URL (the
cache; local memory when unset), BENCH_GATEWAY_BASE_URL (the stand-in Gateway).
"""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "gateway_realtime",
]
MIDDLEWARE = [
    "gateway_realtime.middleware.NoStoreSecretsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

_db = urlsplit(os.environ.get("BENCH_DATABASE_URL", ""))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
        # Persistent connections, as docs/deployment.md recommends.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": True,
    }
}
if os.environ.get("BENCH_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["BENCH_REDIS_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("BENCH_RUN"):
    # One run's limits and circuit breaker, whatever an earlier run left in Redis.
    GATEWAY_REALTIME_RATE_KEY_PREFIX = "gateway_realtime-bench-" + os.environ["BENCH_RUN"]
# Sessions read from the cache, written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"gateway_realtime": {"level": "WARNING"}},
}

GATEWAY_REALTIME_API_KEY = "emulator-key"
GATEWAY_REALTIME_BASE_URL = os.environ.get("BENCH_GATEWAY_BASE_URL", "http://127.0.0.1:8787/v4/ai")
GATEWAY_REALTIME_DEFAULT_MODELS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
# The lifetime the AI SDK docs' setup route asks for, so that ours and the anchor mint alike.
GATEWAY_REALTIME_DEFAULT_LIFETIME = 600
GATEWAY_REALTIME_MAX_LIFETIME = 600
# Limits on, as a site runs them, too high to refuse anyone: checking them is measured.
GATEWAY_REALTIME_RATE = "1000000/m"
GATEWAY_REALTIME_QUOTA = 1_000_000_000
if os.environ.get("BENCH_APP_DEFAULTS") != "1":
    # The bulkhead for 8 threads a worker (docs/deployment.md): 6 may wait on
    # the Gateway, 2 always serve pages. Deadlines and the breaker keep their
    # defaults. With BENCH_APP_DEFAULTS=1 the site runs the app's defaults.
    GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 6
