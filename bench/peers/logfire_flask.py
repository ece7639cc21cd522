"""Logfire on the Flask app: ``instrument_flask`` and ``instrument_sqlalchemy`` with their
defaults (every request traced)."""

from __future__ import annotations

import logfire

from peers._logfire import configure

configure()
logfire.instrument_sqlalchemy()  # before Flask-SQLAlchemy creates its engine

from flask_bench import app  # noqa: E402

logfire.instrument_flask(app)

__all__ = ["app"]
