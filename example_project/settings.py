"""Settings for the example site. Not for production as they stand.

Environment:
- AI_GATEWAY_API_KEY, AI_GATEWAY_BASE_URL, AI_GATEWAY_TEAM: the Gateway (the
  demo sets them to its local emulator unless you set a real key).
- DATABASE_URL (postgres://user:pass@host:port/name): SQLite when unset.
- REDIS_URL (redis://host:port/db): local memory cache when unset.
- RELAY_REDIS_URL (redis://host:port/db): relay mode's channel layer on Redis
  (channels-redis), for many processes; in memory (one process) when unset.
- DEMO_RELAY=1: the page shows the relayed voice element too (set by
  ``make demo RELAY=1``, which serves the site with uvicorn, example_project.asgi).
"""

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "gateway_realtime",
    "example_project",
]

MIDDLEWARE = [
    # Pages that carry a client secret are never cached (see docs/browser.md).
    "gateway_realtime.middleware.NoStoreSecretsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

# The OpenAPI schema of the mint endpoints (docs/openapi.md) when the
# `openapi` extra (drf-spectacular) is installed: /api/schema/ and a page.
OPENAPI_INSTALLED = importlib.util.find_spec("drf_spectacular") is not None
if OPENAPI_INSTALLED:
    INSTALLED_APPS.append("drf_spectacular")
    REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    SPECTACULAR_SETTINGS = {
        "TITLE": "django-gateway-realtime example site",
        "DESCRIPTION": "The client secret endpoints the AI SDK's experimental_useRealtime calls.",
        "VERSION": "1",
    }

# Relay mode (docs/relay.md) when the `relay` extra is installed: Channels,
# the ASGI application with the relay's routes, and a channel layer for
# revocation (in memory for one process; Redis for many).
RELAY_INSTALLED = importlib.util.find_spec("channels") is not None
DEMO_RELAY = RELAY_INSTALLED and os.environ.get("DEMO_RELAY") == "1"
if RELAY_INSTALLED:
    INSTALLED_APPS.insert(0, "channels")
    ASGI_APPLICATION = "example_project.asgi.application"
    if os.environ.get("RELAY_REDIS_URL"):
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # A socket time-out above channels_redis's 5 s blocking read,
                # or redis-py 8 drops every idle session (check W008).
                "CONFIG": {
                    "hosts": [{"address": os.environ["RELAY_REDIS_URL"], "socket_timeout": 10}]
                },
            }
        }
    else:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str | None) -> dict[str, object]:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        }
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError("DATABASE_URL must be a postgres:// URL")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}

if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"gateway_realtime": {"handlers": ["console"], "level": "INFO"}},
}

# --- django-gateway-realtime -------------------------------------------------
# The credential comes from AI_GATEWAY_API_KEY (read by the app itself, per
# mint); these read the other two variables the example documents.
GATEWAY_REALTIME_BASE_URL = os.environ.get(
    "AI_GATEWAY_BASE_URL", "https://ai-gateway.vercel.sh/v4/ai"
)
GATEWAY_REALTIME_TEAM = os.environ.get("AI_GATEWAY_TEAM") or None
GATEWAY_REALTIME_DEFAULT_MODELS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
# openai/gpt-live-1 is a Live model (continuous; the Gateway's live-model route).
GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-realtime-mini", "openai/gpt-live-1"]}
GATEWAY_REALTIME_DEFAULT_LIFETIME = 120
GATEWAY_REALTIME_MAX_LIFETIME = 600

# Limits (docs/limits-and-security.md). With REDIS_URL the burst rate is
# counted in Redis, shared by every worker and host; the quota always lives in
# the database, so it holds on PostgreSQL across any number of workers.
GATEWAY_REALTIME_RATE = os.environ.get("GATEWAY_REALTIME_RATE", "30/min")
GATEWAY_REALTIME_QUOTA = int(os.environ.get("GATEWAY_REALTIME_QUOTA", "1000"))
GATEWAY_REALTIME_QUOTA_PERIOD = 86400
GATEWAY_REALTIME_AUDIT_RETENTION_DAYS = 90
# The voice, dictation and read-aloud elements hang up after this many seconds.
GATEWAY_REALTIME_ELEMENT_MAX_SECONDS = 120
if not os.environ.get("REDIS_URL"):
    # One runserver process counts exactly in local memory; W004 is for deployments.
    SILENCED_SYSTEM_CHECKS = ["gateway_realtime.W004"]
