"""The bootstrap sequence, run once per process (from ``sitecustomize`` or the distro).

configuration -> SDK pipeline -> runtime -> instrumentations.  Each instrumentation is
installed under its own guard: one that fails is skipped with a warning naming it and
the reason, and the app starts regardless.  Nothing here raises into the host app except
``ConfigError`` under ``OTEL_PERF_STRICT=true``, which is the point of strict mode.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry.metrics import CallbackOptions, Observation

from otel_perf import _names as n
from otel_perf._config import Config, ConfigError, load
from otel_perf._metrics.instruments import Registry
from otel_perf._setup import fork, guard, providers, runtime
from otel_perf._setup.runtime import Runtime, build_instruments

logger = logging.getLogger("otel_perf")
INSTRUMENTATIONS = ("fastapi", "sqlalchemy", "httpx", "logging", "system_metrics", "asyncio")


def _warn_problems(config: Config) -> None:
    for problem in config.problems:
        logger.warning("otel-perf: %s", problem.message())


def _startup_logging() -> logging.Handler | None:
    """Our startup warnings must be seen before any handler exists; removed once logging is set up."""
    lg = logging.getLogger("otel_perf")
    if lg.handlers or logging.getLogger().handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    lg.addHandler(handler)
    lg.propagate = False
    return handler


def _end_startup_logging(handler: logging.Handler | None) -> None:
    if handler is None:
        return
    lg = logging.getLogger("otel_perf")
    if logging.getLogger().handlers:  # the root handler (ours or the app's) takes over
        lg.removeHandler(handler)
        lg.propagate = True


def _memory_limit() -> float:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return float(raw)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0.0


def _runtime_metrics(disabled: set[str]) -> None:
    meter = metrics_api.get_meter("otel_perf.runtime")
    limit = _memory_limit()

    def memory_limit(_options: CallbackOptions) -> list[Observation]:
        return [Observation(limit)] if limit else []

    # Always registered: it also gives the SDK reader data to hand our merging exporter on
    # every collection (the SDK skips the export when its own instruments have none). The
    # limit is known wherever /sys/fs/cgroup or sysconf answers (Linux, macOS).
    meter.create_observable_gauge(
        n.PROCESS_MEMORY_LIMIT,
        [memory_limit],
        "By",
        "Memory the process may use (cgroup limit, else physical RAM).",
    )
    if "system_metrics" in disabled:
        return
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    SystemMetricsInstrumentor(
        config={
            n.PROCESS_CPU_TIME: ["user", "system"],
            n.PROCESS_CPU_UTILIZATION: None,
            n.PROCESS_MEMORY: None,
            "process.memory.virtual": None,
            n.PROCESS_THREADS: None,
            n.GC_COLLECTIONS: None,
            "process.open_file_descriptor.count": None,
        }
    ).instrument()


def bootstrap(env: dict[str, str] | None = None) -> Runtime | None:
    """Configure telemetry for this process.  Idempotent; returns the runtime (None if disabled)."""
    existing = runtime.get()
    if existing is not None:
        return existing
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    config = load(env)
    startup_handler = _startup_logging()
    config.raise_if_strict(env)  # strict: the refusal alone, before any warning
    _warn_problems(config)
    if config.flag("OTEL_SDK_DISABLED"):
        return None
    disabled = {x.lower().replace("-", "_") for x in config.items("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")}
    if "asgi" in disabled or "starlette" in disabled:
        disabled.add("fastapi")
    if not config.flag("OTEL_PERF_SYSTEM_METRICS"):
        disabled.add("system_metrics")

    budgets: Any = None
    budget_bounds: list[float] = []
    budgets_path = config.text("OTEL_PERF_BUDGETS")
    if budgets_path:
        try:
            from otel_perf._analysis.budgets import load_budgets

            budgets = load_budgets(budgets_path)
            budget_bounds = budgets.bounds_seconds()
        except Exception as exc:
            if config.strict:
                raise ConfigError(f"OTEL_PERF_BUDGETS={budgets_path!r} is invalid: {exc}") from exc
            logger.warning("otel-perf: OTEL_PERF_BUDGETS=%r not used: %s", budgets_path, exc)
            budgets = None

    registry = Registry(int(config.number("OTEL_PERF_MAX_ROUTES")))
    inst = build_instruments(registry, budget_bounds)
    health = providers.Health(registry, config.number("OTEL_PERF_WARN_INTERVAL"))
    pipeline = providers.build(config, registry, health)
    from opentelemetry import trace

    from otel_perf import __version__

    tracer = trace.get_tracer("otel_perf", __version__)
    rt = Runtime(config, tracer, registry, inst, pipeline.resource, budgets=budgets)
    rt.health = health
    registry.gauge(
        n.HTTP_SERVER_ACTIVE, "{request}", "HTTP requests in flight.", (n.A_METHOD,), rt.active_points
    )
    if budgets is not None:
        _budget_gauges(rt, registry)
    runtime.set_runtime(rt)
    fork.register()
    _install_instrumentations(rt, config, disabled, pipeline)
    _end_startup_logging(startup_handler)
    providers.rate_limit_sdk_logs(config.number("OTEL_PERF_WARN_INTERVAL"))

    before_exit = None
    if config.flag("OTEL_PERF_REPORT"):

        def before_exit() -> None:
            from otel_perf._analysis.stats import summary
            from otel_perf._export.report import render

            sys.stderr.write(render(summary(rt)))
            sys.stderr.flush()

    providers.register_exit(pipeline, config.number("OTEL_PERF_SHUTDOWN_TIMEOUT"), before_exit)
    rt.pipeline = pipeline  # type: ignore[attr-defined]
    return rt


def _budget_gauges(rt: Runtime, registry: Registry) -> None:
    budgets = rt.budgets
    assert budgets is not None
    duration_points = []
    error_points = []
    for method, route, budget in budgets.routes():
        for q in ("p50", "p95", "p99"):
            limit = getattr(budget, f"{q}_ms", None)
            if limit is not None:
                duration_points.append((limit / 1000.0, (route, method, q)))
        if getattr(budget, "error_rate", None) is not None:
            error_points.append((float(getattr(budget, "error_rate", 0.0)), (route, method)))
    registry.gauge(
        n.BUDGET_DURATION,
        "s",
        "Latency budget per route and quantile.",
        (n.A_ROUTE, n.A_METHOD, n.A_BUDGET_QUANTILE),
        lambda: duration_points,
    )
    registry.gauge(
        n.BUDGET_ERROR_RATE,
        "1",
        "Error-rate budget per route.",
        (n.A_ROUTE, n.A_METHOD),
        lambda: error_points,
    )


def _install_instrumentations(rt: Runtime, config: Config, disabled: set[str], pipeline: Any) -> None:
    service_name = str(rt.resource.attributes.get("service.name", ""))

    def step(name: str, fn: Any) -> None:
        if name in disabled:
            return
        try:
            fn()
        except Exception as exc:
            if guard.raising():
                raise
            logger.warning("otel-perf: %s instrumentation skipped: %s: %s", name, type(exc).__name__, exc)

    def logging_step() -> None:
        from otel_perf._instrumentation import logs

        logs.install_record_factory(service_name)
        logs.install_handlers(config.text("OTEL_PERF_LOG_FORMAT"), service_name, pipeline.log_handler)

    def server_step() -> None:
        from otel_perf._export.stats_endpoint import StatsEndpoint
        from otel_perf._instrumentation import loop, starlette

        stats = (
            StatsEndpoint(rt)
            if config.text("OTEL_PERF_STATS_TOKEN") and config.text("OTEL_PERF_STATS_PATH")
            else None
        )
        if config.text("OTEL_PERF_STATS_PATH") and not config.text("OTEL_PERF_STATS_TOKEN"):
            logger.warning(
                "otel-perf: OTEL_PERF_STATS_PATH is set but OTEL_PERF_STATS_TOKEN is empty; "
                "the stats endpoint stays off. Set a token to enable it."
            )
        monitor = None
        if config.flag("OTEL_PERF_LOOP_MONITOR") and "asyncio" not in disabled:
            monitor = loop.instrument(rt)
            pipeline.shutdown_hooks.append(monitor.stop)
        starlette.instrument(rt, stats, monitor)

    def sqlalchemy_step() -> None:
        from otel_perf._instrumentation import sqlalchemy

        sqlalchemy.instrument(rt)
        _check_sqlalchemy_version()

    def httpx_step() -> None:
        from otel_perf._instrumentation import httpx

        httpx.instrument(rt)

    step("logging", logging_step)
    step("fastapi", server_step)
    step("sqlalchemy", sqlalchemy_step)
    step("httpx", httpx_step)
    # Not skipped with the system metrics: the memory-limit gauge it always registers is what
    # makes the SDK reader hand our instruments to the exporter at each collection.
    step("runtime_metrics", lambda: _runtime_metrics(disabled))


def _check_sqlalchemy_version() -> None:
    """Our listener needs SQLAlchemy's 1.4+/2.x engine events; say so for anything older."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("sqlalchemy")
    except PackageNotFoundError:
        return
    major = int(v.split(".")[0]) if v.split(".")[0].isdigit() else 0
    if major < 2 and not v.startswith("1.4"):
        logger.warning(
            "otel-perf: SQLAlchemy %s is too old to instrument (need 1.4 or 2.x); no DB telemetry.", v
        )
