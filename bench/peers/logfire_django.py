"""Logfire on the Django app: ``instrument_django`` and ``instrument_sqlite3`` with their
defaults (every request traced); gunicorn serves ``application``."""

from __future__ import annotations

import logfire

from peers._logfire import configure

configure()
logfire.instrument_django()
logfire.instrument_sqlite3()

from djbench.wsgi import application  # noqa: E402

__all__ = ["application"]
