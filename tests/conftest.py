"""Shared pytest fixtures. Keep this file to fixtures; the machinery lives in ``tests/support``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from support.mysql import MySQLServer, mariadb_paths, start_mysql
from support.otlp_receiver import OTLPReceiver
from support.postgres import PostgresServer, find_pg_bindir, start_postgres
from support.procs import SCRUBBED_ENV_PREFIXES, AppProcess, skip_or_fail, tail
from support.prometheus import PrometheusServer, prometheus_path, start_prometheus
from support.redis import RedisServer, redis_server_path, start_redis

# Tests that use these fixtures get the markers automatically, so `-m "not slow"` deselects them.
_FIXTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "postgres_server": ("postgres", "slow"),
    "postgres_url": ("postgres", "slow"),
    "prometheus_factory": ("prometheus", "slow"),
    "redis_server": ("redis", "slow"),
    "mysql_server": ("mysql", "slow"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in _FIXTURE_MARKERS.get(fixture, ()):
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every OTEL_* / OTEL_PERF_* variable so a developer's shell cannot change test results."""
    for key in list(os.environ):
        if key.startswith(SCRUBBED_ENV_PREFIXES):
            monkeypatch.delenv(key)


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started OTLP/HTTP receiver on 127.0.0.1 (``.endpoint``, ``.exporter_env()``), stopped after."""
    with OTLPReceiver() as receiver:
        yield receiver


AppFactory = Callable[..., AppProcess]


@pytest.fixture
def app_process() -> Iterator[AppFactory]:
    """Factory ``app_process(args, env=None, cwd=None, name=None) -> AppProcess`` (already started).

    Every process is stopped at teardown, even when the test fails; its output is printed then, so
    pytest shows it in the report of a failed test.
    """
    started: list[AppProcess] = []

    def start(
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AppProcess:
        proc = AppProcess(args, env, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in reversed(started):
        proc.stop()
        print(f"--- {proc.name} (exit {proc.returncode}) output:\n{tail(proc.output())}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 for the whole session (skipped locally if not installed; fails under CI)."""
    if find_pg_bindir() is None:
        skip_or_fail("PostgreSQL server binaries not installed (Debian package postgresql-15)")
    with start_postgres("testdb") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL ``postgresql+psycopg://postgres@127.0.0.1:PORT/testdb`` of the session database.

    Shared by all tests: use unique table names, or ``postgres_server.create_database(name)``.
    """
    return postgres_server.url("testdb")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway Redis on a loopback port for the whole session (skipped locally if not installed;
    fails under CI). Shared: tests use their own database numbers or key prefixes."""
    if redis_server_path() is None:
        skip_or_fail("redis-server not installed (Debian package redis-server)")
    with start_redis() as server:
        yield server


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """A throwaway MariaDB on a loopback port with database ``testdb``, for the whole session
    (skipped locally if not installed; fails under CI)."""
    if mariadb_paths() is None:
        skip_or_fail("mariadbd not installed (Debian package mariadb-server)")
    with start_mysql("testdb") as server:
        yield server


PrometheusFactory = Callable[..., PrometheusServer]


@pytest.fixture
def prometheus_factory() -> Iterator[PrometheusFactory]:
    """Factory ``prometheus_factory(targets, **kw) -> PrometheusServer`` (see ``start_prometheus``).

    Servers are stopped at teardown. Skipped locally when the binary is missing; fails under CI=true.
    """
    if prometheus_path() is None:
        skip_or_fail("prometheus binary not installed (Debian package prometheus)")
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str] = (), **kwargs: Any) -> PrometheusServer:
        server = start_prometheus(targets, **kwargs)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def sqlalchemy_20_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding SQLAlchemy 2.0.x to put first on a child's PYTHONPATH (pip installs 2.1)."""
    import subprocess
    import sys

    target = tmp_path_factory.mktemp("sqlalchemy20")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), "sqlalchemy>=2.0,<2.1", "greenlet"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"could not install SQLAlchemy 2.0 for the version matrix: {result.stderr[-500:]}")
    return str(target)
