"""The bench site with the admin, for ``python -m bench.scale`` (docs/scaling.md)."""

from bench.settings import *  # noqa: F403
from bench.settings import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [
    "django.contrib.admin",
    *INSTALLED_APPS,
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [*MIDDLEWARE, "django.contrib.messages.middleware.MessageMiddleware"]
ROOT_URLCONF = "bench.scale_urls"
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
STATIC_URL = "/static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
# Sessions in the database: the simulation's staff client logs in once.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
