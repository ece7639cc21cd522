"""Settings of the test Django project: no telemetry code, configured by environment variables.

``APP_DB``: a SQLite file path, or ``postgresql://user@host:port/name`` (psycopg 3).
``APP_DEBUG``: ``1`` (default) or ``0``.  ``APP_PROPAGATE=1``: ``DEBUG_PROPAGATE_EXCEPTIONS``
(a view's exception escapes the handler).  ``APP_LOGGING=root``: a LOGGING setting that gives
the root logger a console handler of its own (and, as dictConfig does by default, disables
the loggers that exist already).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "test-only-not-secret"
DEBUG = os.environ.get("APP_DEBUG", "1") == "1"
DEBUG_PROPAGATE_EXCEPTIONS = os.environ.get("APP_PROPAGATE") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djsite.urls"
WSGI_APPLICATION = "djsite.wsgi.application"
ASGI_APPLICATION = "djsite.asgi.application"
INSTALLED_APPS = ["polls"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "polls.middleware.BreakOnHeader",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_db = os.environ.get("APP_DB", "/tmp/otel-perf-djsite.sqlite3")
if _db.startswith("postgresql://"):
    _url = urlsplit(_db)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username or "postgres",
            "HOST": _url.hostname or "127.0.0.1",
            "PORT": str(_url.port or 5432),
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _db}}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "default"},
    "sessions": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sessions"},
}

if os.environ.get("APP_LOGGING") == "root":
    LOGGING = {
        "version": 1,
        "formatters": {"plain": {"format": "APPLOG %(levelname)s %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }
