"""Issue 16: each integration proves at start-up that it records; one that cannot is named.

SQLAlchemy up to 2.0.55 and 2.1.0 silently recorded nothing (a check of ours skipped every
statement).  The SQLAlchemy adapter now runs one statement through a private in-memory engine
when SQLAlchemy is imported; if the hook does not see it, one WARNING names the library, its
version and what is lost, and the exit report says so.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_perf._config import load
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._integrations import BY_NAME
from otel_perf._integrations import sqlalchemy as ours_sa
from otel_perf._metrics.instruments import Registry
from otel_perf._setup import integrations


@pytest.fixture
def runtime() -> Any:
    registry = Registry()
    rt = Runtime(
        load({}),
        TracerProvider(shutdown_on_exit=False).get_tracer("t"),
        registry,
        build_instruments(registry),
        Resource.create({}),
    )
    yield rt
    ours_sa.uninstall()
    integrations.STATUS.pop("ours:sqlalchemy", None)


def test_the_hook_proves_it_records_on_this_sqlalchemy(runtime: Runtime) -> None:
    import sqlalchemy

    ours_sa.install(runtime, sqlalchemy)
    assert ours_sa.self_check(runtime) == ""
    # The probe's statement reached no metric.
    assert not runtime.inst.db_duration.series()


def test_a_hook_that_records_nothing_is_named_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlalchemy

    # What SQLAlchemy 2.0.0-2.0.55 did to us: every statement looked like the dialect's own
    # initialization and was let through unrecorded.
    monkeypatch.setattr(ours_sa.SQLAlchemyListener, "hook", lambda self, engine, statements=None: None)
    monkeypatch.delenv("OTEL_PERF__RAISE_ERRORS", raising=False)
    with caplog.at_level(logging.WARNING, logger="otel_perf"):
        integrations._install(BY_NAME["sqlalchemy"], runtime, sqlalchemy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    expected = f"otel-perf: SQLAlchemy {sqlalchemy.__version__} is installed but records nothing"
    assert warnings[0].startswith(expected)
    assert "no DB spans" in warnings[0]
    assert integrations.STATUS["ours:sqlalchemy"].state == "failed"
    assert any("SQLAlchemy" in note for note in runtime.notes)  # the exit report says it too
