"""What the bootstrap leaves out of memory, and that leaving it out changes nothing exported.

The official log handler is run from its own module file (its package's instrumentor and
``BaseInstrumentor``'s imports stay out), the HTTP-suppression test reads the API's keys itself
(``opentelemetry.instrumentation.utils`` and ``wrapt`` stay out), and the process metrics are
read without the system-metrics instrumentation (tests/test_system_metrics.py).  Each of the
first two is a probe; here each is compared with the official path it replaces, and its
fallback is shown to be that path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.matrix

_HEAVY = (
    "opentelemetry.instrumentation.logging",
    "opentelemetry.instrumentation.utils",
    "wrapt",
    "packaging",
)

#: Emits the same records through a handler class and prints what the exporter received.
_EMIT = r"""
import json, logging, sys
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
try:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as Memory
except ImportError:
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as Memory

def records(handler_class):
    exporter = Memory()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = handler_class(level=logging.NOTSET, logger_provider=provider)
    log = logging.getLogger("shop.orders")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("request"):
        log.info("order %s paid", 42, extra={"order.id": 42, "tenant": "acme"})
        try:
            raise ValueError("bad card")
        except ValueError:
            log.exception("payment failed")
    log.warning("no span here")
    out = []
    for data in exporter.get_finished_logs():
        r = getattr(data, "log_record", data)
        attrs = dict(r.attributes or {})
        stack = attrs.pop("exception.stacktrace", "")
        out.append({
            "body": r.body, "severity_text": r.severity_text,
            "severity_number": int(r.severity_number.value) if r.severity_number else None,
            "attributes": sorted((k, repr(v)) for k, v in attrs.items()),
            "stack_ends": stack.strip().splitlines()[-1] if stack else "",
            "traced": bool(r.trace_id), "scope": data.instrumentation_scope.name,
        })
    return out
"""


def _launch(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``script`` under ``otel-perf-instrument`` with ``env`` over this environment minus its OTEL_*."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | env
    launcher = Path(sys.executable).with_name("otel-perf-instrument")
    done = subprocess.run(
        [str(launcher), sys.executable, str(script)], capture_output=True, text=True, env=full_env,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _run(code: str, env: dict[str, str] | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_handler_run_alone_exports_what_the_usual_import_does() -> None:
    code = _EMIT + (
        "from otel_perf._setup.providers import official_log_handler\n"
        "alone = official_log_handler()\n"
        f"heavy = sorted(m for m in sys.modules if m.startswith({_HEAVY!r}))\n"
        "first = records(alone)\n"
        "from opentelemetry.instrumentation.logging.handler import LoggingHandler\n"
        "usual = records(LoggingHandler)\n"
        "print(json.dumps({'heavy': heavy, 'alone': first, 'usual': usual,\n"
        "                  'same_class': alone is LoggingHandler,\n"
        "                  'name': alone.__module__}))\n"
    )
    out = json.loads(_run(code))
    assert out["heavy"] == []
    assert out["same_class"] is False  # loaded on its own, not the package's copy
    assert out["name"] == "opentelemetry.instrumentation.logging.handler"
    assert out["alone"] == out["usual"]
    paid, failed, plain = out["alone"]
    assert paid["body"] == "order 42 paid" and paid["traced"] and ["order.id", "42"] in paid["attributes"]
    assert failed["stack_ends"] == "ValueError: bad card" and failed["severity_text"] == "ERROR"
    assert plain["severity_text"] == "WARN" and not plain["traced"]


def test_the_handler_fallback_is_the_usual_import() -> None:
    code = (
        "from otel_perf._setup.providers import official_log_handler\n"
        "cls = official_log_handler()\n"
        "from opentelemetry.instrumentation.logging.handler import LoggingHandler\n"
        "print(cls is LoggingHandler)\n"
    )
    assert _run(code, {"OTEL_PERF__PROBES_OFF": "instrumentation-logging-handler-alone"}).strip() == "True"
    # and once the package is imported (an app using LoggingInstrumentor), its class is used
    imported_first = "import opentelemetry.instrumentation.logging\n" + code
    assert _run(imported_first).strip() == "True"


_SUPPRESSION = r"""
import json
from opentelemetry import context
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled as official
from otel_perf._core.suppression import is_http_instrumentation_enabled as ours
keys = [context._SUPPRESS_INSTRUMENTATION_KEY, "suppress_instrumentation",
        context._SUPPRESS_HTTP_INSTRUMENTATION_KEY]
rows = []
for mask in range(8):
    ctx = context.get_current()
    for i, key in enumerate(keys):
        if mask & (1 << i):
            ctx = context.set_value(key, True, ctx)
    token = context.attach(ctx)
    try:
        rows.append([mask, ours(), official()])
    finally:
        context.detach(token)
print(json.dumps({"rows": rows, "official": ours is official}))
"""


@pytest.mark.parametrize("probes_off", ["", "api-suppress-keys"])
def test_http_suppression_check_answers_as_the_official_one(probes_off: str) -> None:
    out = json.loads(_run(_SUPPRESSION, {"OTEL_PERF__PROBES_OFF": probes_off}))
    assert out["official"] is bool(probes_off)
    assert [r[1] for r in out["rows"]] == [r[2] for r in out["rows"]] == [True] + [False] * 7


_EXCLUDED = r"""
import json
from opentelemetry import context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from otel_perf._core import suppression
def seen():
    return [suppression.suppressed(context.get_current()), is_instrumentation_enabled(),
            suppression.is_http_instrumentation_enabled()]
outside = seen()
token = context.attach(suppression.untraced())
try:
    inside = seen()
finally:
    context.detach(token)
print(json.dumps({"outside": outside, "inside": inside, "keys_here": suppression._KEYS_HERE}))
"""


@pytest.mark.parametrize("probes_off", ["", "api-suppress-keys"])
def test_an_excluded_requests_suppression_is_the_official_one(probes_off: str) -> None:
    """What the server adapters set for a request to an excluded URL, and what the statement
    and command cores read, is what the official instrumentations set and read, probe or not."""
    out = json.loads(_run(_EXCLUDED, {"OTEL_PERF__PROBES_OFF": probes_off}))
    assert out["keys_here"] is not bool(probes_off)
    assert (out["outside"], out["inside"]) == ([False, True, True], [True, False, False])


def test_a_bootstrapped_app_imports_none_of_them(tmp_path: Path) -> None:
    """Under the launcher, with logs exported and process metrics on (production settings).

    (An official instrumentation still brings them when it loads: ``celery``'s, say, when the
    app uses Celery.)
    """
    probe = tmp_path / "modules.py"
    probe.write_text(
        "import json, logging, sys\n"
        "logging.getLogger('x').warning('hello')\n"
        "inner = [type(h.inner).__module__ for h in logging.getLogger().handlers if hasattr(h, 'inner')]\n"
        f"print(json.dumps([inner, sorted(m for m in sys.modules if m.startswith({_HEAVY!r}))]))\n"
    )
    from importlib.metadata import entry_points

    # Official instrumentations of libraries installed here (the test environment has several)
    # load whatever they import; ours for logging and the process metrics stay on.
    others = {e.name for e in entry_points(group="opentelemetry_instrumentor")} - {
        "logging",
        "system_metrics",
    }
    env = {
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(sorted(others)),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: exports fail
        "OTEL_PERF_SHUTDOWN_TIMEOUT": "0.2",
    }
    done = _launch(probe, env)
    handlers, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert handlers == ["opentelemetry.instrumentation.logging.handler"]  # the OTLP log handler is there
    assert heavy == []
    assert "LoggingHandler" not in done.stderr


_LOGS_AND_METRICS = r"""
import logging, time
log = logging.getLogger("shop.checkout")
log.setLevel(logging.DEBUG)
def pay():
    log.info("paid-info-line")
    log.warning("paid-warning-line")
pay()
time.sleep(1.2)  # two metric exports
"""


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["defaults", "set", "sdk-handler-switch"])
def test_the_log_and_process_metric_variables_reach_the_receiver(
    settings: str, otlp_receiver: Any, tmp_path: Path
) -> None:
    """OTEL_PYTHON_LOG_CODE_ATTRIBUTES, OTEL_PYTHON_LOG_HANDLER_LEVEL and
    OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS, as the official instrumentations read them; with
    the SDK's switch for its own handler on (what stock users set to get logs), the code
    attributes that handler adds."""
    script = tmp_path / "checkout.py"
    script.write_text(_LOGS_AND_METRICS)
    env = otlp_receiver.exporter_env()
    env |= {"OTEL_SERVICE_NAME": f"checkout-{settings}", "OTEL_LOGS_EXPORTER": "otlp"}
    if settings == "set":
        env |= {
            "OTEL_PYTHON_LOG_CODE_ATTRIBUTES": "true",
            "OTEL_PYTHON_LOG_HANDLER_LEVEL": "warning",
            "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.memory.*,cpython.*",
        }
    elif settings == "sdk-handler-switch":
        env["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"] = "true"
    _launch(script, env)
    warning = otlp_receiver.wait_for(
        lambda: otlp_receiver.logs("paid-warning-line"), what="the warning record"
    )
    names = otlp_receiver.wait_for(
        lambda: {m for m in otlp_receiver.metric_names() if m.startswith(("process.", "cpython."))},
        what="process metrics",
    )
    info = otlp_receiver.logs("paid-info-line")
    code = {k: v for k, v in warning[0].attributes.items() if k.startswith("code.")}
    where = {"code.file.path": str(script), "code.function.name": "pay", "code.line.number": 7}
    # every process metric of the official instrumentor's default configuration
    left = {"process.context_switches", "process.cpu.time", "process.cpu.utilization",
            "process.open_file_descriptor.count", "process.thread.count", "process.disk.io",
            *(f"process.runtime.cpython.{m}" for m in ("memory", "cpu_time", "gc_count", "thread_count",
                                                        "cpu.utilization", "context_switches"))}  # fmt: skip
    if settings == "set":
        assert info == []
        assert code == where
        assert names == left
    else:
        assert len(info) == 1 and code == ({} if settings == "defaults" else where)
        memory_and_gc = {"process.memory.usage", "process.memory.virtual", "cpython.gc.collections",
                         "cpython.gc.collected_objects", "cpython.gc.uncollectable_objects"}  # fmt: skip
        assert names == left | memory_and_gc
