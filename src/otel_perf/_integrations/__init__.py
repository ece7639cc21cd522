"""The libraries we instrument ourselves: one adapter module each, one row each in :data:`REGISTRY`.

An adapter is a module of this package with

* ``install(runtime, module)`` — hook the library; called once per trigger module as it is
  imported (``module``; None for rows with no trigger); raise :class:`DidNotEnable` with a
  reason when this copy of the library cannot be instrumented (one warning names it);
* ``uninstall()`` — undo every patch (adapters keep them in a
  :class:`~otel_perf._core.patching.Patches`);
* optionally ``self_check(runtime) -> str`` — after install, prove the hook records
  (for example run one statement through it); return what is lost if it does not, "" if
  it does.

Adapters stay thin: what a request, a statement or an outgoing call *means* (spans, metrics,
findings) lives in :mod:`otel_perf._core`; an adapter only finds the library's one place to
hook and translates its objects.  Everything else the app uses is instrumented by the
official OpenTelemetry instrumentations installed beside us (loaded from their entry points
by :mod:`otel_perf._setup.integrations`), except the ones a row here ``replaces``.

Adding an integration: write the adapter module, add its row.
"""

from __future__ import annotations

from dataclasses import dataclass


class DidNotEnable(Exception):
    """Raised by an adapter's ``install`` when the library cannot be instrumented; says why."""


@dataclass(frozen=True)
class Integration:
    """One library we instrument ourselves."""

    #: the name ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` and messages use
    name: str
    #: adapter module under ``otel_perf._integrations``
    adapter: str
    #: importing any of these modules activates the row (empty: activated at bootstrap)
    modules: tuple[str, ...]
    #: the distribution whose version is checked, and the oldest version we support
    library: str = ""
    min_version: str = ""
    #: what it gives, one line (README table, ``otel-perf config``)
    provides: str = ""
    #: official instrumentations (``opentelemetry_instrumentor`` entry-point names) not loaded
    #: while this row is on: they would instrument the same library twice
    replaces: tuple[str, ...] = ()
    #: other names that switch this row off in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
    aliases: tuple[str, ...] = ()
    #: the ``pip install 'otel-perf-instrument[extra]'`` that brings the library's extras
    extra: str = ""
    #: the library as a reader names it (README table); ``library`` when empty
    label: str = ""
    #: official instrumentations that record part of this library's telemetry beside the row
    #: (its extra installs them)
    official: tuple[str, ...] = ()


REGISTRY: tuple[Integration, ...] = (
    Integration(
        "logging",
        "logs",
        (),
        provides="trace-correlated JSON/text log lines; log records over OTLP",
        replaces=("logging",),
        label="`logging` (standard library)",
    ),
    Integration(
        "system_metrics",
        "system_metrics",
        (),
        provides="process CPU, memory, threads, open files, context switches, disk I/O, GC "
        "(host-wide `system.*` with `OTEL_PERF_HOST_METRICS=true`)",
        replaces=("system_metrics",),
        label="the process (CPU, memory, threads, GC)",
    ),
    Integration(
        "asyncio",
        "event_loop",
        (),
        provides="event-loop lag; the request that blocked the loop",
        label="the asyncio event loop",
    ),
    Integration(
        "fastapi",
        "starlette",
        (
            "starlette.applications",
            "fastapi.applications",
            "opentelemetry.instrumentation.fastapi",
            "opentelemetry.instrumentation.starlette",
        ),
        library="starlette",
        min_version="0.36.3",
        provides="SERVER spans and RED metrics by route template, traceresponse, stats endpoint, "
        "slow-request and N+1 findings per request",
        replaces=("fastapi", "starlette", "asgi"),
        aliases=("asgi", "starlette"),
        extra="fastapi",
        label="FastAPI, Starlette",
    ),
    Integration(
        "background_tasks",
        "background",
        ("starlette.background",),
        library="starlette",
        min_version="0.36.3",
        provides="each task a job of its own (span, perf.job.duration, queries and N+1 per task), "
        "not part of the request's duration",
        extra="fastapi",
        label="FastAPI / Starlette `BackgroundTasks`",
    ),
    Integration(
        "django",
        "django",
        (
            "django.core.handlers.base",
            "django.core.handlers.wsgi",
            "django.core.handlers.asgi",
            "django.core.signals",
            "django.db.backends.base.base",
            "django.db.backends.signals",
            "django.core.cache",
            "django.utils.log",
            "django.utils.autoreload",
        ),
        library="Django",
        min_version="5.2",
        provides="SERVER spans and RED metrics by URL pattern (WSGI and ASGI), traceresponse, stats "
        "endpoint; ORM statements with slow-query and N+1 findings per request; cache hits and misses",
        replaces=("django",),
        extra="django",
        label="Django",
    ),
    Integration(
        "flask",
        "flask",
        ("flask.app", "flask.signals", "werkzeug._reloader"),
        library="Flask",
        min_version="3.0",
        provides="SERVER spans and RED metrics by route template, traceresponse, stats endpoint, "
        "findings per request (SQL through the sqlalchemy row)",
        replaces=("flask",),
        extra="flask",
        label="Flask",
    ),
    Integration(
        "wsgi",
        "wsgi",
        (),
        provides="a WSGI app of no framework we instrument by route, loaded by gunicorn or uvicorn "
        "(--interface wsgi): SERVER spans and RED metrics by method, traceresponse, stats endpoint, findings",
        replaces=("wsgi",),
        label="any other WSGI app (Falcon, Bottle, ...)",
    ),
    Integration(
        "sqlalchemy",
        "sqlalchemy",
        ("sqlalchemy",),
        library="SQLAlchemy",
        min_version="2.0",
        provides="a span and a db.client.operation.duration point per statement, queries per "
        "request, slow-query and N+1 findings, connection-pool metrics",
        replaces=("sqlalchemy",),
        extra="sqlalchemy",
        label="SQLAlchemy",
    ),
    Integration(
        "sqlite3",
        "sqlite3",
        ("sqlite3",),
        provides="raw sqlite3 statements: a span and a db.client.operation.duration point per "
        "statement, db.client.response.returned_rows where the cursor counts them, queries per unit "
        "of work, slow-query and N+1 findings (SQLAlchemy's counted once)",
        replaces=("sqlite3",),
        label="`sqlite3` (standard library)",
    ),
    Integration(
        "psycopg",
        "psycopg",
        ("psycopg",),
        library="psycopg",
        min_version="3.1",
        provides="raw psycopg 3 statements (sync and async): a span and a db.client.operation.duration "
        "point per statement, db.client.response.returned_rows, queries per unit of work, slow-query "
        "and N+1 findings (SQLAlchemy's counted once)",
        replaces=("psycopg",),
        extra="psycopg",
        label="psycopg",
    ),
    Integration(
        "asyncpg",
        "asyncpg",
        ("asyncpg",),
        library="asyncpg",
        min_version="0.27",
        provides="raw asyncpg statements (prepared ones too): a span and a db.client.operation.duration "
        "point per statement, queries per unit of work, slow-query and N+1 findings (SQLAlchemy's "
        "counted once)",
        replaces=("asyncpg",),
        extra="asyncpg",
        label="asyncpg",
    ),
    Integration(
        "pymysql",
        "pymysql",
        ("pymysql",),
        library="PyMySQL",
        min_version="1.0",
        provides="raw PyMySQL statements: a span and a db.client.operation.duration point per "
        "statement, db.client.response.returned_rows, queries per unit of work, slow-query and N+1 "
        "findings (SQLAlchemy's counted once)",
        replaces=("pymysql",),
        extra="pymysql",
        label="PyMySQL",
    ),
    Integration(
        "redis",
        "redis",
        ("redis.client", "redis.asyncio.client"),
        library="redis",
        min_version="4.2",
        provides="a span and a db.client.operation.duration point per Redis command (sync, asyncio, "
        "pipelines); cache hits and misses of GET/MGET/HGET/HMGET/HGETALL/EXISTS per cache",
        replaces=("redis",),
        extra="redis",
        label="redis-py",
    ),
    Integration(
        "celery",
        "celery",
        ("celery",),
        library="celery",
        min_version="5.2.3",
        provides="every task run a job of its own: perf.job.duration and failures by task, queue wait, "
        "queries and N+1/slow-query findings per task, the worker's logs with the task's trace id "
        "(spans and propagation: the official celery instrumentation)",
        extra="celery",
        label="Celery",
        official=("celery",),
    ),
    Integration(
        "httpx",
        "httpx",
        ("httpx",),
        library="httpx",
        min_version="0.27",
        provides="CLIENT spans with traceparent, http.client.request.duration, rate-limit "
        "headroom and 429s per host",
        replaces=("httpx",),
        extra="httpx",
        label="httpx",
    ),
    Integration(
        "requests",
        "requests",
        ("requests",),
        library="requests",
        min_version="2.26",
        provides="CLIENT spans with traceparent, http.client.request.duration, rate-limit "
        "headroom and 429s per host",
        replaces=("requests",),
        extra="requests",
        label="requests",
    ),
    Integration(
        "urllib3",
        "urllib3",
        ("urllib3",),
        library="urllib3",
        min_version="1.26.5",
        provides="CLIENT spans with traceparent, http.client.request.duration, request and response "
        "body sizes, rate-limit headroom and 429s per host",
        replaces=("urllib3",),
        extra="urllib3",
        label="urllib3",
    ),
    Integration(
        "aiohttp_client",
        "aiohttp",
        ("aiohttp",),
        library="aiohttp",
        min_version="3.9",
        provides="CLIENT spans with traceparent, http.client.request.duration, rate-limit "
        "headroom and 429s per host",
        replaces=("aiohttp-client",),
        aliases=("aiohttp",),
        extra="aiohttp",
        label="aiohttp client",
    ),
    Integration(
        "uvicorn",
        "uvicorn",
        (
            "uvicorn.config",
            "uvicorn.server",
            "uvicorn.supervisors.multiprocess",
            "uvicorn.supervisors.basereload",
        ),
        library="uvicorn",
        min_version="0.29",
        provides="uvicorn's error log (with the failed request's trace id) in JSON lines and OTLP; "
        "telemetry flushed when it stops on SIGTERM; any other ASGI app it serves measured by method",
        label="uvicorn",
    ),
    Integration(
        "gunicorn",
        "gunicorn",
        ("gunicorn.glogging", "gunicorn.arbiter", "gunicorn.workers.base", "gunicorn.workers.gasgi"),
        library="gunicorn",
        min_version="22",
        provides="gunicorn's error log in JSON lines and OTLP; no exit report from the arbiter; "
        "any other app its workers load measured by method",
        label="gunicorn",
    ),
)

BY_NAME: dict[str, Integration] = {row.name: row for row in REGISTRY}


def _library_cell(row: Integration) -> str:
    label = row.label or row.library or row.name
    if not row.min_version:
        return label
    if label.lower() == row.library.lower():
        return f"{label} {row.min_version}+"
    return f"{label} ({row.library} {row.min_version}+)"


def markdown_table(rows: tuple[Integration, ...] = REGISTRY) -> str:
    """The README's library table, generated from :data:`REGISTRY` (``otel-perf instrumentations
    --markdown`` prints it)."""
    lines = [
        "| Library (oldest supported) | What we record | Adapter (in `_integrations/`), official "
        "instrumentation | `pip install` extra | Switch off with |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        adapter = f"`{row.adapter}.py`"
        if row.replaces:
            adapter += ", replaces " + ", ".join(f"`{name}`" for name in row.replaces)
        if row.official:
            adapter += ", with " + ", ".join(f"`{name}`" for name in row.official) + " (in the extra)"
        extra = f"`[{row.extra}]`" if row.extra else ""
        off = ", ".join(f"`{name}`" for name in (row.name, *row.aliases))
        provides = row.provides.replace("|", "\\|")
        lines.append(f"| {_library_cell(row)} | {provides} | {adapter} | {extra} | {off} |")
    return "\n".join(lines)
