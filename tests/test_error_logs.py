"""Issue 16: the server's own error record for a failed request reaches OTLP, with that request's trace.

uvicorn and gunicorn log an unhandled exception ("Exception in ASGI application", with its
traceback) on loggers that do not propagate, after our middleware has left the request's
context.  The record must still be exported over OTLP with the failed request's trace id
and the exception, and follow ``OTEL_PERF_LOG_FORMAT`` on stderr (one JSON object per line).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import BIN, launcher, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port

pytestmark = pytest.mark.slow

MESSAGE = "Exception in ASGI application"


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_unhandled_exception_record_is_exported_with_the_request_trace(
    server: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    port = free_port()
    args: tuple[str, ...] = ()
    if server == "gunicorn":
        args = (str(BIN / "gunicorn"), "-w", "1", "-k", "uvicorn.workers.UvicornWorker",
                "-b", f"127.0.0.1:{port}", "service:app")  # fmt: skip
    else:
        args = (str(BIN / "uvicorn"), "service:app", "--host", "127.0.0.1", "--port", str(port))
    sync_url, _ = sqlite_urls(tmp_path)
    svc = start_service(app_process, otlp_receiver, sync_url, server=args, port=port)
    failed = 3
    for _ in range(failed):
        assert httpx.get(svc.base + "/boom").status_code == 500
    spans = otlp_receiver.wait_for(
        lambda: otlp_receiver.spans(name="GET /boom", kind="SERVER") if len(
            otlp_receiver.spans(name="GET /boom", kind="SERVER")) == failed else [],
        what="the failed requests' spans",
    )  # fmt: skip
    records = otlp_receiver.wait_for(
        lambda: r if len(r := otlp_receiver.logs(MESSAGE)) == failed else [],
        what=f"{failed} exported '{MESSAGE}' records",
    )
    assert {r.trace_id for r in records} == {s.trace_id for s in spans}
    assert {r.span_id for r in records} == {s.span_id for s in spans}
    for record in records:
        assert record.severity_text == "ERROR"
        assert record.attributes["exception.type"] == "RuntimeError"
        assert "raise RuntimeError" in record.attributes["exception.stacktrace"]
    svc.proc.stop()
    lines = [json.loads(line) for line in svc.proc.stderr().splitlines() if MESSAGE in line]
    assert len(lines) == failed, svc.proc.stderr()[-3000:]
    assert {line["trace_id"] for line in lines} == {s.trace_id for s in spans}
    assert all(line["exception"]["type"] == "RuntimeError" for line in lines)


def _script_under_the_launcher(code: str, receiver: OTLPReceiver) -> subprocess.CompletedProcess[str]:
    """``python -c code`` under the launcher, exporting to ``receiver``; it must exit 0."""
    return _script_under_the_launcher_with(code, receiver, {})


def _script_under_the_launcher_with(
    code: str, receiver: OTLPReceiver, extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = clean_environ({**receiver.exporter_env(), "OTEL_PERF__RAISE_ERRORS": "1", **extra})
    result = subprocess.run(
        [launcher(), sys.executable, "-c", code],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_an_app_configuring_logging_with_dictconfig_keeps_log_export_and_our_warnings(
    otlp_receiver: OTLPReceiver,
) -> None:
    """A Flask-style app's ``logging.config.dictConfig`` (root handlers replaced, existing loggers
    disabled): its records are still exported over OTLP and our logger still writes."""
    code = (
        "import logging, logging.config\n"
        "logging.config.dictConfig({'version': 1, 'formatters': {'f': {'format': 'APP %(message)s'}},\n"
        "    'handlers': {'h': {'class': 'logging.StreamHandler', 'formatter': 'f', 'stream': 'ext://sys.stdout'},\n"
        "                 'null': {'class': 'logging.NullHandler'}},\n"
        "    'loggers': {'dictapp.audit': {'handlers': ['h'], 'propagate': False, 'level': 'INFO'},\n"
        "                'dictapp.access': {'handlers': ['h'], 'propagate': False, 'level': 'INFO'},\n"
        "                'dictapp.silenced': {'handlers': ['null'], 'propagate': False}},\n"
        "    'root': {'level': 'INFO', 'handlers': ['h']}})\n"
        "logging.getLogger('dictapp').warning('configured by the app')\n"
        "logging.getLogger('dictapp.audit').info('an audit line')\n"
        "logging.getLogger('dictapp.audit.sub').info('a child audit line')\n"
        "logging.getLogger('dictapp.access').info('GET /x 200')\n"
        "logging.getLogger('dictapp.silenced').warning('silenced on purpose')\n"
        "print('otel_perf disabled:', logging.getLogger('otel_perf').disabled)\n"
    )
    result = _script_under_the_launcher(code, otlp_receiver)
    assert "APP configured by the app" in result.stdout  # the app's own handler writes its lines
    assert "otel_perf disabled: False" in result.stdout
    record = otlp_receiver.wait_for_logs("configured by the app")[0]
    assert record.severity_number == 13  # WARN
    # A logger the config stops at itself (propagate False, its own handler): exported, once.
    assert "APP an audit line" in result.stdout
    assert len(otlp_receiver.wait_for_logs("an audit line")) == 1
    assert len(otlp_receiver.wait_for_logs("a child audit line")) == 1
    # Not an access log (a line per request: the SERVER span), not a logger silenced on purpose.
    assert not [r for r in otlp_receiver.logs() if r.body in ("GET /x 200", "silenced on purpose")]


def test_after_the_apps_logging_config_our_lines_do_not_come_back_beside_its_own(
    otlp_receiver: OTLPReceiver,
) -> None:
    """A config that leaves the root without handlers and gives the app's logger its own: the
    app's handler writes each line, ours does not write it a second time on stderr."""
    code = (
        "import logging, logging.config\n"
        "logging.config.dictConfig({'version': 1, 'disable_existing_loggers': False,\n"
        "    'handlers': {'h': {'class': 'logging.StreamHandler', 'stream': 'ext://sys.stdout'}},\n"
        "    'loggers': {'myapp': {'handlers': ['h'], 'level': 'INFO'}}, 'root': {'level': 'INFO'}})\n"
        "logging.getLogger('myapp').warning('order 42 placed')\n"
    )
    result = _script_under_the_launcher(code, otlp_receiver)
    assert result.stdout.count("order 42 placed") == 1
    assert "order 42 placed" not in result.stderr
    assert len(otlp_receiver.wait_for_logs("order 42 placed")) == 1  # exported from the root


@pytest.mark.parametrize("log_format", ["json", "off"])
def test_a_scripts_basicconfig_writes_where_and_how_it_says_and_records_are_still_exported(
    log_format: str, otlp_receiver: OTLPReceiver
) -> None:
    """``logging.basicConfig(level=DEBUG, stream=sys.stdout, format=...)`` in a script or cron
    job: its lines on stdout in its format, DEBUG included, each record exported once (with
    our handlers on the root it was a no-op: no stdout, no DEBUG).  ``basicConfig(level=...)``
    alone keeps our lines and takes the level."""
    shaped = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout,\n"
        "                    format='MYFMT %(levelname)s|%(message)s')\n"
        "logging.getLogger('cron').debug('a debug line')\n"
        "logging.getLogger('cron').warning('a warning line')\n"
    )
    result = _script_under_the_launcher_with(shaped, otlp_receiver, {"OTEL_PERF_LOG_FORMAT": log_format})
    assert "MYFMT DEBUG|a debug line" in result.stdout and "MYFMT WARNING|a warning line" in result.stdout
    assert "a warning line" not in result.stderr  # not written twice
    assert len(otlp_receiver.wait_for_logs("a debug line")) == 1
    assert len(otlp_receiver.wait_for_logs("a warning line")) == 1
    if log_format == "json":
        level_only = (
            "import logging\n"
            "logging.basicConfig(level=logging.DEBUG)\n"
            "logging.getLogger('cron').debug('level only')\n"
        )
        result = _script_under_the_launcher_with(level_only, otlp_receiver, {"OTEL_PERF_LOG_FORMAT": "json"})
        [line] = [json.loads(x) for x in result.stderr.splitlines() if "level only" in x]
        assert line["level"] == "DEBUG"  # our JSON line, at the level the app asked for


def test_the_official_logging_variables_shape_lines_and_export(otlp_receiver: OTLPReceiver) -> None:
    """OTEL_PYTHON_LOG_CORRELATION=true with OTEL_PYTHON_LOG_FORMAT and OTEL_PYTHON_LOG_LEVEL:
    lines in that format at that level, as the official logging instrumentation writes them;
    OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION=false: no record exported over OTLP."""
    code = (
        "import logging\n"
        "from opentelemetry import trace\n"
        "with trace.get_tracer('t').start_as_current_span('job'):\n"
        "    logging.getLogger('cron').debug('a debug line')\n"
        "logging.getLogger('cron').info('an info line')\n"
    )
    shaped = {
        "OTEL_PYTHON_LOG_CORRELATION": "true",
        "OTEL_PYTHON_LOG_FORMAT": "CUSTOM %(levelname)s trace=%(otelTraceID)s %(message)s",
        "OTEL_PYTHON_LOG_LEVEL": "debug",
    }
    result = _script_under_the_launcher_with(code, otlp_receiver, shaped)
    [debug] = [line for line in result.stderr.splitlines() if "a debug line" in line]
    assert debug.startswith("CUSTOM DEBUG trace=") and len(debug.split("trace=")[1].split()[0]) == 32
    assert "CUSTOM INFO trace=0 an info line" in result.stderr
    assert len(otlp_receiver.wait_for_logs("a debug line")) == 1
    off = {"OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": "false", "OTEL_SERVICE_NAME": "no-log-export"}
    result = _script_under_the_launcher_with(code.replace("line", "quiet line"), otlp_receiver, off)
    assert "an info quiet line" in result.stderr  # the lines stay
    quiet = "no-log-export"
    otlp_receiver.wait_for_spans(name="job", where=lambda s: s.resource.get("service.name") == quiet)
    assert not otlp_receiver.logs("an info quiet line")


@pytest.mark.parametrize("disabled", ["", "psycopg2"])
def test_a_database_client_nothing_instruments_is_named_once_when_used(
    disabled: str, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """psycopg2 (no adapter of ours) without its official instrumentation would record nothing,
    silently: one warning names it and what to install, unless the user switched it off."""
    import os

    (tmp_path / "psycopg2").mkdir()
    (tmp_path / "psycopg2" / "__init__.py").write_text("paramstyle = 'pyformat'\n")  # a stand-in
    code = "import psycopg2\nimport psycopg2\nprint('imported', psycopg2.paramstyle)\n"
    extra = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)}
    if disabled:
        extra["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = disabled
    result = _script_under_the_launcher_with(code, otlp_receiver, extra)
    assert "imported pyformat" in result.stdout
    said = "psycopg2 is in use and nothing instruments it"
    warnings = [line for line in result.stderr.splitlines() if said in line]
    if disabled:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "opentelemetry-instrumentation-psycopg2" in warnings[0]
