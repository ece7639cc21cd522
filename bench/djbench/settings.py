"""Django's ``startproject`` defaults, minus the apps and middleware that need their own tables
(sessions, auth, messages, admin); a persistent database connection per thread, as a
production deployment would configure (``CONN_MAX_AGE``)."""

import os
import tempfile

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djbench.urls"
WSGI_APPLICATION = "djbench.wsgi.application"
INSTALLED_APPS = ["djbench"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB")
        or os.path.join(tempfile.gettempdir(), f"otel-perf-djbench-{os.getpid()}.db"),
        "CONN_MAX_AGE": None,
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
