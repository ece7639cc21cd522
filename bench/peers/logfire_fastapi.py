"""Logfire on the FastAPI app: ``instrument_fastapi`` and ``instrument_sqlalchemy`` with their
defaults (every request traced)."""

from __future__ import annotations

import logfire

from peers._logfire import configure

configure()
logfire.instrument_sqlalchemy()  # before the app creates its engine

from app import app  # noqa: E402

logfire.instrument_fastapi(app)

__all__ = ["app"]
