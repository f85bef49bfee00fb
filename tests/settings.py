"""Settings for the test suite: small, and separate from example_project.

SQLite and local memory by default, so the suite runs on a laptop with no
services. ``GATEWAY_REALTIME_TEST_SERVICES=1`` switches to the PostgreSQL and
Redis given by ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` (defaults: the ones
on 127.0.0.1).
"""

import importlib.util
import os
from urllib.parse import urlsplit

import django

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "gateway_realtime",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

SERVICES = os.environ.get("GATEWAY_REALTIME_TEST_SERVICES") == "1"

if SERVICES:
    db = urlsplit(os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": db.path.lstrip("/") or "test",
            "USER": db.username or "postgres",
            "PASSWORD": db.password or "",
            "HOST": db.hostname or "127.0.0.1",
            "PORT": str(db.port or 5432),
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

GATEWAY_REALTIME_API_KEY = "test-gateway-key"
GATEWAY_REALTIME_BASE_URL = "https://gateway.test/v4/ai"
GATEWAY_REALTIME_DEFAULT_MODELS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-realtime-mini"]}
GATEWAY_REALTIME_MAX_LIFETIME = 600
# As a site with the openapi extra sets it (docs/openapi.md): the example
# project's schema view is imported with it in place.
if importlib.util.find_spec("drf_spectacular") is not None:
    REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}

# The usage ledger written as each mint completes, so that a test reads it at
# once; tests/test_usage.py covers the gathered writes of the default (1.0 s).
GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL = 0

if django.VERSION >= (6, 1):
    # Django 6.1 replaces EMAIL_BACKEND with MAILERS; the test environment
    # swaps every mailer for the in-memory one (mail.outbox).
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
