"""Issue 7: bad input never breaks the host app.

* Every setting we read (``OTEL_PERF_*`` and the standard ``OTEL_*`` ones), and the SDK
  variables that would otherwise make the SDK raise or spin, given any value: loading never
  raises, the value used has the declared type and bounds, a malformed value is reported
  naming the variable, and strict mode fails naming it.
* End to end: an app started with a hostile value in every variable at once starts, serves
  and says what it ignored; strict mode refuses to start, naming the variable; a malformed
  budgets file is reported (and refused under strict mode).
* Hostile requests over raw sockets -- malformed ``traceparent``/``tracestate``/``baggage``,
  enormous headers, URLs and query strings, non-UTF-8 bytes in the path -- never reach the
  app as an exception from us, and the telemetry for them is still exported.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_perf._cli.launcher import strict_errors
from otel_perf._config import MAX_VALUE_LENGTH, SETTINGS, ConfigError, Setting, load, sdk_problems
from support.launch import APPS, BIN, Service, launcher, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port

# ---------------------------------------------------------------------------------------------------
# Configuration properties (in process)
# ---------------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=40),
    st.sampled_from(
        ["nan", "inf", "-inf", "1e309", "-1", "0", "9" * 400, "true\x00", " ", "\u202e", "١٢", "²"]
    ),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _conforms(setting: Setting, value: Any) -> bool:
    kind = setting.kind
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        if value is None and setting.default is None:  # unset: a standard variable the SDK defaults
            return True
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        if kind == "int" and not isinstance(value, int):
            return False
        return (setting.minimum is None or value >= setting.minimum) and (
            setting.maximum is None or value <= setting.maximum
        )
    if kind == "enum":
        return value in setting.choices
    if kind in ("list", "plugins"):
        return isinstance(value, tuple) and all(isinstance(i, str) and i.isprintable() for i in value)
    if kind == "url":  # an optional URL (OTEL_PERF_BROWSER_ENDPOINT) may stay unset
        optional = value == "" and setting.default == ""
        return isinstance(value, str) and (value.startswith(("http://", "https://")) or optional)
    return isinstance(value, str) and (value == "" or value.isprintable()) and len(value) <= MAX_VALUE_LENGTH


@settings(max_examples=400)
@given(setting=st.sampled_from(SETTINGS), raw=HOSTILE_TEXT)
def test_any_value_of_any_setting_loads(setting: Setting, raw: str) -> None:
    config = load({setting.env: raw})
    value = config[setting.env]
    assert _conforms(setting, value), (setting.env, raw, value)
    mine = [p for p in config.problems if p.env == setting.env]
    assert len(mine) <= 1
    if mine:
        message = mine[0].message()
        assert message.startswith(f"{setting.env}=") and f"Fix or unset {setting.env}." in message
        assert len(message) < 1000  # a 100 kB value is shown cut, not copied
        assert "\x1b" not in message and "\x00" not in message  # shown with repr, never raw
    strict_env = {setting.env: raw, "OTEL_PERF_STRICT": "true"}
    strict = load(strict_env)
    if strict.problems:
        with pytest.raises(ConfigError, match=setting.env):
            strict.raise_if_strict(strict_env)
    elif setting.kind != "path":  # a path is also refused when no valid file is there
        strict.raise_if_strict(strict_env)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_enormous_values_are_rejected_and_shown_cut(setting: Setting) -> None:
    raw = "1" * (MAX_VALUE_LENGTH + 1) if setting.kind in ("int", "float") else "ab" * 50_000
    config = load({setting.env: raw})
    assert config[setting.env] == setting.default
    (problem,) = config.problems
    assert problem.env == setting.env and len(problem.message()) < 400


def test_every_setting_rejects_a_hostile_value_by_name() -> None:
    env = {s.env: _hostile(s) for s in SETTINGS}
    config = load(env)
    flagged = {p.env for p in config.problems}
    assert flagged == set(env), set(env) - flagged
    with pytest.raises(ConfigError) as info:
        load({**env, "OTEL_PERF_STRICT": "true"}).raise_if_strict()
    for name in set(env) - {"OTEL_PERF_STRICT"}:
        assert f"Fix or unset {name}." in str(info.value), name


def _hostile(setting: Setting) -> str:
    return {
        "bool": "yes please",
        "int": "9" * 400,
        "float": "nan",
        "enum": "json\x1b[31m",
        "list": "a,\x07b",
        "url": "javascript:alert(1)",
    }.get(setting.kind, "\x1b]0;pwned\x07")


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_excluded_urls_only_keep_patterns_that_compile(patterns: list[str]) -> None:
    import re

    raw = ",".join(patterns)
    value = load({"OTEL_PYTHON_EXCLUDED_URLS": raw})["OTEL_PYTHON_EXCLUDED_URLS"]
    if value:
        re.compile("|".join(f"(?:{p})" for p in value))  # what the middleware compiles


SDK_VARIABLES = [
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BLRP_SCHEDULE_DELAY",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
]


@given(name=st.sampled_from(SDK_VARIABLES), raw=HOSTILE_TEXT)
def test_sdk_variables_are_checked(name: str, raw: str) -> None:
    problems = sdk_problems({name: raw})
    assert all(p.env == name for p in problems)
    if not problems:
        assert raw.strip() == "" or _sdk_accepts(name, raw.strip())


def _sdk_accepts(name: str, text: str) -> bool:
    """Build what the SDK builds from the variable; True if it does not raise."""
    from opentelemetry.sdk.trace import SpanLimits

    if "TIMEOUT" in name and "OTLP" in name:
        return 0 < float(text) <= 3600
    int(text)  # raises on anything the SDK's int() parse rejects
    SpanLimits(max_attributes=int(text))
    return True


def test_sdk_accepts_valid_values() -> None:
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "0",
    }
    assert sdk_problems(env) == []


def test_strict_mode_names_sdk_variables_and_budgets(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("routes:\n  'GET /x': [unclosed\n")
    env = {"OTEL_PERF_STRICT": "true", "OTEL_BSP_SCHEDULE_DELAY": "soon", "OTEL_PERF_BUDGETS": str(budgets)}
    errors = strict_errors(load(env), env)
    assert any(e.startswith("OTEL_BSP_SCHEDULE_DELAY='soon'") for e in errors), errors
    assert any(e.startswith(f"OTEL_PERF_BUDGETS={str(budgets)!r}") for e in errors), errors


# ---------------------------------------------------------------------------------------------------
# Hostile environments, end to end
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_app_starts_and_serves_with_every_variable_hostile(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    hostile = {s.env: _hostile(s) for s in SETTINGS}
    # The exporter settings stay valid so we can see telemetry still flows; they are
    # covered by the property test and by the all-hostile start below.
    for keep in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_SDK_DISABLED",
    ):
        hostile.pop(keep)
    hostile["OTEL_RESOURCE_ATTRIBUTES"] = "huge=" + "x" * 100_000
    hostile |= {
        "OTEL_BSP_SCHEDULE_DELAY": "soon",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "-1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "inf",
        "OTEL_METRICS_EXEMPLAR_FILTER": "sometimes",
    }
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0], env={**hostile, "OTEL_PERF__RAISE_ERRORS": "0"}
    )
    assert httpx.get(svc.base + "/items/3").status_code == 200
    span = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER", timeout=20)[0]
    assert "huge" not in span.resource  # a rejected value is not used by the SDK either
    stderr = svc.proc.stderr()
    for name in hostile:
        assert f"{name}=" in stderr and f"Fix or unset {name}." in stderr, name
    assert "\x1b" not in stderr  # hostile values are shown escaped, never raw
    assert "telemetry disabled" not in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_app_starts_with_every_variable_hostile_including_exporters(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = {s.env: _hostile(s) for s in SETTINGS}
    svc = start_service(
        app_process, None, sqlite_urls(tmp_path)[0], env={**env, "OTEL_PERF__RAISE_ERRORS": "0"}
    )
    assert httpx.get(svc.base + "/items/1").status_code == 200
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='javascript:alert(1)' is invalid" in svc.proc.stderr()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_PERF_SLOW_QUERY_MS", "fast"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-5"),
    ],
)
def test_strict_mode_refuses_to_start_naming_the_variable(variable: str, value: str) -> None:
    env = clean_environ(
        {
            "OTEL_PERF_STRICT": "true",
            variable: value,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
    )
    result = subprocess.run(
        [launcher(), sys.executable, "-c", "print('app ran')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "app ran" not in result.stdout
    assert f"{variable}={value!r} is invalid" in result.stderr
    assert "OTEL_PERF_STRICT=true" in result.stderr


@pytest.mark.slow
def test_malformed_budgets_file_is_reported_and_refused_under_strict(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("routes:\n  GET /items/{id}: {p95_ms: [1, 2\n")
    svc = start_service(app_process, None, sqlite_urls(tmp_path)[0], env={"OTEL_PERF_BUDGETS": str(budgets)})
    assert httpx.get(svc.base + "/items/1").status_code == 200
    assert f"OTEL_PERF_BUDGETS={str(budgets)!r} not used" in svc.proc.stderr()

    env = clean_environ(
        {
            "OTEL_PERF_STRICT": "true",
            "OTEL_PERF_BUDGETS": str(budgets),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
    )
    result = subprocess.run(
        [launcher(), sys.executable, "-c", "print('app ran')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "app ran" not in result.stdout
    assert "OTEL_PERF_BUDGETS=" in result.stderr


# ---------------------------------------------------------------------------------------------------
# Hostile requests, end to end
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, OTLPReceiver]]:
    """One service for all hostile requests (module scope: hypothesis sends many)."""
    with OTLPReceiver() as receiver:
        port = free_port()
        db = tmp_path_factory.mktemp("hostile") / "app.db"
        env = {
            "OTEL_SERVICE_NAME": "hostile",
            "OTEL_PERF__RAISE_ERRORS": "1",
            "APP_DATABASE_URL": f"sqlite:///{db}",
            "PYTHONPATH": str(APPS),
            **receiver.exporter_env(),
        }
        proc = AppProcess(
            [launcher(), str(BIN / "uvicorn"), "service:app", "--host", "127.0.0.1", "--port", str(port)],
            env,
            name="hostile",
        ).start()
        try:
            base = f"http://127.0.0.1:{port}"
            proc.wait_http(base + "/hello", timeout=30)
            yield Service(proc, base), receiver
        finally:
            proc.stop()
            print(f"--- hostile service output:\n{proc.output()[-4000:]}")


def _raw(svc: Service, request: bytes) -> int:
    """Send raw bytes, return the response status (0 if the server closed without answering)."""
    host, port = svc.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0


def _get(path: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close", b"", b""]
    return b"\r\n".join(lines)


HEADER_BYTES = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
PATH_BYTES = st.binary(min_size=1, max_size=200).map(
    lambda b: b"/" + bytes(c for c in b if c not in b" \r\n\t?#")
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traceparent=HEADER_BYTES, tracestate=HEADER_BYTES, baggage=HEADER_BYTES, path=PATH_BYTES)
def test_hostile_propagation_headers_and_paths(
    served: tuple[Service, OTLPReceiver], traceparent: bytes, tracestate: bytes, baggage: bytes, path: bytes
) -> None:
    svc, _ = served
    status = _raw(
        svc,
        _get(b"/hello", b"traceparent: " + traceparent, b"tracestate: " + tracestate, b"baggage: " + baggage),
    )
    assert status in (200, 400), status  # 400: the server's HTTP parser refused the bytes
    status = _raw(svc, _get(path, b"traceparent: 00-" + traceparent[:60]))
    assert status in (200, 307, 400, 404, 405, 422), (path, status)


@pytest.mark.slow
def test_enormous_and_malformed_requests(served: tuple[Service, OTLPReceiver]) -> None:
    svc, receiver = served
    valid_tp = b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    cases = {
        "non-UTF-8 path": (_get(b"/items/\xff\xfe\xc0"), (400,)),
        "percent-encoded non-UTF-8": (_get(b"/items/%ff%fe%c0%80"), (404, 422)),
        "enormous header": (_get(b"/hello", b"X-Big: " + b"a" * 60_000), (200, 400, 431)),
        "enormous baggage": (_get(b"/hello", b"baggage: " + b"k=v," * 5_000), (200, 400, 431)),
        "enormous tracestate": (
            _get(b"/hello", valid_tp, b"tracestate: " + b"a=b," * 5_000),
            (200, 400, 431),
        ),
        "fifty traceparents": (_get(b"/hello", *[valid_tp] * 50), (200,)),
        "enormous path": (_get(b"/hello/" + b"a" * 15_000), (404, 414)),
        "100 kB path": (_get(b"/" + b"a" * 100_000), (404, 414, 400)),
        "enormous query": (_get(b"/hello?" + b"token=x&" * 2_000), (200, 414)),
        "unknown method": (b"PROPFIND /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", (405,)),
    }
    for name, (request, expected) in cases.items():
        assert _raw(svc, request) in expected, name
    for i in range(30):  # a flood of distinct malformed baggage: warnings stay rate-limited
        assert _raw(svc, _get(b"/hello", f"baggage: bad{i}=;;,%zz{i}".encode())) == 200
    assert svc.proc.stderr().count("Invalid baggage entry") <= 1
    assert httpx.get(svc.base + "/hello").status_code == 200
    long_path = receiver.wait_for(
        lambda: [s for s in receiver.spans(kind="SERVER") if len(s.attributes.get("url.path", "")) >= 2048],
        what="the span of the enormous path",
    )[0]
    assert len(long_path.attributes["url.path"]) == 2048
    assert not receiver.errors()
    stderr = svc.proc.stderr()
    assert "Traceback" not in stderr and "internal error" not in stderr


@pytest.mark.slow
def test_non_utf8_sql_is_exported_as_valid_text(served: tuple[Service, OTLPReceiver]) -> None:
    svc, receiver = served
    assert httpx.get(svc.base + "/weird-sql").json() == {"rows": 1, "failed": "UnicodeEncodeError"}
    spans = receiver.wait_for(
        lambda: [
            s for s in receiver.spans(kind="CLIENT") if "weird" in s.attributes.get("db.query.text", "")
        ],
        what="the span of the statement with a lone surrogate",
    )
    for span in spans:
        span.attributes["db.query.text"].encode("utf-8")
    assert not receiver.errors()
