"""Settings of the bench-only site: the app as a production site would run it.

Environment (set by ``bench.run``):
- BENCH_DATABASE_URL: ``postgres://...``; SQLite at BENCH_SQLITE_PATH when unset.
- BENCH_REDIS_URL: the cache (throttles); local memory when unset.
- BENCH_GATEWAY_BASE_URL: the stand-in gateway; BENCH_CA_BUNDLE for its TLS cert.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bench.urls"
WSGI_APPLICATION = "bench.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "gateway_realtime",
    "bench",
]

# The middleware a typical site has; the no-op endpoint pays for it too.
MIDDLEWARE = [
    # What docs/browser.md tells sites with the template tag to use, first.
    "gateway_realtime.middleware.NoStoreSecretsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

_db_url = os.environ.get("BENCH_DATABASE_URL")
if _db_url:
    _db = urlsplit(_db_url)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.path.lstrip("/"),
            "USER": unquote(_db.username or ""),
            "PASSWORD": unquote(_db.password or ""),
            "HOST": _db.hostname or "",
            "PORT": str(_db.port or ""),
            # Persistent connections, as any production site would configure.
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": True,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "BENCH_SQLITE_PATH", str(BASE_DIR.parent / ".bench" / "bench.sqlite3")
            ),
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                # Several worker processes write the audit trail at once.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }

# The bench process's second alias: a copy of the bench database that gets a
# million audit rows for the scale phase (bench.run), served by a site of its own.
if os.environ.get("BENCH_ROWS_DATABASE"):
    DATABASES["rows"] = {**DATABASES["default"], "NAME": os.environ["BENCH_ROWS_DATABASE"]}

if os.environ.get("BENCH_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["BENCH_REDIS_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# What docs/deployment.md recommends, and what Django offers for it: sessions
# read from the cache (Redis), written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Mint log lines on a terminal would measure the terminal, not the app.
    "loggers": {"gateway_realtime": {"level": "WARNING"}},
}

GATEWAY_REALTIME_API_KEY = "emulator-key"
GATEWAY_REALTIME_BASE_URL = os.environ.get("BENCH_GATEWAY_BASE_URL", "http://127.0.0.1:8787/v4/ai")
GATEWAY_REALTIME_CLIENT_CLASS = "bench.client.BenchGatewayClient"
GATEWAY_REALTIME_DEFAULT_MODELS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
# The lifetime the AI SDK docs' setup example asks for, so ours and the anchor mint alike.
GATEWAY_REALTIME_DEFAULT_LIFETIME = 600
GATEWAY_REALTIME_MAX_LIFETIME = 600
# Limits on, as a site would run them, set high enough never to refuse the
# bench: the cost of checking them is what is measured.
GATEWAY_REALTIME_RATE = "1000000/m"
GATEWAY_REALTIME_QUOTA = 1_000_000_000
# The bulkhead, sized as docs/deployment.md says for 12 threads a worker: 8
# may wait on the Gateway (8 concurrent clients, all on one worker, still
# fit), 4 always serve pages. The timeouts and the breaker keep their defaults.
GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 8
