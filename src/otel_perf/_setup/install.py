"""The bootstrap sequence, run once per process (from ``sitecustomize`` or the distro).

configuration -> SDK pipeline -> runtime -> instrumentations.  Each instrumentation is
installed under its own guard: one that fails is skipped with a warning naming it and
the reason, and the app starts regardless.  Nothing here raises into the host app except
``ConfigError`` under ``OTEL_PERF_STRICT=true``, which is the point of strict mode.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry.metrics import CallbackOptions, Observation

from otel_perf import _names as n
from otel_perf._config import Config, ConfigError, load
from otel_perf._core import guard, runtime, semconv_dup
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._metrics.instruments import Registry
from otel_perf._setup import fork, integrations, providers

logger = logging.getLogger("otel_perf")


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


def _memory_limit_gauge() -> None:
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


def bootstrap(env: dict[str, str] | None = None, load_official: bool = True) -> Runtime | None:
    """Configure telemetry for this process.  Idempotent; returns the runtime (None if disabled).

    ``load_official=False``: leave the official instrumentations to the caller
    (``opentelemetry-instrument`` loads them itself, through our distro).
    """
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
    disabled = integrations.disabled_by(config)

    budgets: Any = None
    budget_bounds: list[float] = []
    query_bounds: list[float] = []
    db_bounds: list[float] = []
    budgets_path = config.text("OTEL_PERF_BUDGETS")
    if budgets_path:
        try:
            from otel_perf._analysis.budgets import load_budgets

            budgets = load_budgets(budgets_path)
            budget_bounds = budgets.bounds_seconds()
            query_bounds, db_bounds = budgets.query_bounds(), budgets.db_bounds_seconds()
        except Exception as exc:
            if config.strict:
                raise ConfigError(f"OTEL_PERF_BUDGETS={budgets_path!r} is invalid: {exc}") from exc
            logger.warning("otel-perf: OTEL_PERF_BUDGETS=%r not used: %s", budgets_path, exc)
            budgets = None

    registry = Registry(int(config.number("OTEL_PERF_MAX_ROUTES")))
    inst = build_instruments(registry, budget_bounds, query_bounds=query_bounds, db_bounds=db_bounds)
    health = providers.Health(registry, config.number("OTEL_PERF_WARN_INTERVAL"))
    # Before the export threads start: a slow start-up (a loaded machine, many instrumentations
    # to import) must not let every failed batch of the first seconds through.
    providers.rate_limit_sdk_logs(config.number("OTEL_PERF_WARN_INTERVAL"))
    pipeline = providers.build(config, registry, health)
    from opentelemetry import trace

    from otel_perf import __version__

    tracer = trace.get_tracer("otel_perf", __version__)
    rt = Runtime(config, tracer, registry, inst, pipeline.resource, budgets=budgets)
    rt.health = health
    http_dup, rt.old_db = semconv_dup.modes(config)
    if http_dup:
        rt.old_http = semconv_dup.OldHttpMetrics(registry)
    registry.counter(
        n.HTTP_SERVER_ACTIVE,
        "{request}",
        "HTTP requests in flight.",
        (n.A_METHOD, n.A_URL_SCHEME),
        monotonic=False,
        callback=rt.active_points,
    )
    if budgets is not None:
        from otel_perf._export import budget_gauges

        budget_gauges.register(rt, registry)
    rt.pipeline = pipeline
    rt.stats_endpoint = _stats_endpoint(rt, config)
    rt.browser_script = _browser_script(rt, config)
    runtime.set_runtime(rt)
    fork.register()
    # Not skipped with the system metrics: the memory-limit gauge it always registers is what
    # makes the SDK reader hand our instruments to the exporter at each collection.
    _memory_limit_gauge()
    integrations.activate(rt, disabled)
    if load_official:
        integrations.run_hooks("opentelemetry_pre_instrument")
        integrations.load_official(disabled, integrations.replaced_names(disabled))
        integrations.run_hooks("opentelemetry_post_instrument")
        integrations.warn_uncovered(disabled)
    _end_startup_logging(startup_handler)
    providers.rate_limit_sdk_logs(config.number("OTEL_PERF_WARN_INTERVAL"))  # loggers made since

    if config.flag("OTEL_PERF_REPORT"):

        def report() -> None:
            from otel_perf._analysis.stats import summary
            from otel_perf._export.report import render

            # The real stderr when something redirected sys.stderr into logging (a Celery
            # worker does): the report is a block of text, not a log record.
            real = sys.__stderr__
            stream = real if real is not None and not isinstance(sys.stderr, io.IOBase) else sys.stderr
            stream.write(render(summary(rt)))
            stream.flush()

        pipeline.report = report
    providers.register_exit(pipeline, config.number("OTEL_PERF_SHUTDOWN_TIMEOUT"))
    return rt


def _browser_script(rt: Runtime, config: Config) -> Any:
    """The browser script, built once (None while OTEL_PERF_BROWSER_ENDPOINT is unset)."""
    try:
        from otel_perf._export.browser import BrowserScript

        return BrowserScript.from_config(config, rt.resource.attributes, rt.budgets)
    except Exception as exc:  # a broken install (bundle missing) must not stop the app
        if guard.raising():
            raise
        logger.warning("otel-perf: browser script not served: %s: %s", type(exc).__name__, exc)
        return None


def _stats_endpoint(rt: Runtime, config: Config) -> Any:
    if config.text("OTEL_PERF_STATS_PATH") and not config.text("OTEL_PERF_STATS_TOKEN"):
        logger.warning(
            "otel-perf: OTEL_PERF_STATS_PATH is set but OTEL_PERF_STATS_TOKEN is empty; "
            "the stats endpoint stays off. Set a token to enable it."
        )
    stats = bool(config.text("OTEL_PERF_STATS_TOKEN") and config.text("OTEL_PERF_STATS_PATH"))
    if not (stats or config.text("OTEL_PERF_HEALTH_PATH")):
        return None
    from otel_perf._export.stats_endpoint import StatsEndpoint

    endpoint = StatsEndpoint(rt)
    endpoint.start()
    return endpoint
