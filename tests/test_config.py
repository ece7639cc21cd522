"""Configuration: declared once, validated, one warning per bad variable, strict mode, README table."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from otel_perf._config import BY_ENV, SETTINGS, ConfigError, load, markdown_table
from support.launch import BIN, Service, launcher, sqlite_urls, start_service
from support.procs import AppProcess

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_when_unset_or_empty() -> None:
    config = load({"OTEL_PERF_SLOW_QUERY_MS": "", "OTEL_PERF_REPORT": "   "})
    assert config["OTEL_PERF_SLOW_QUERY_MS"] == 100.0
    assert config["OTEL_PERF_REPORT"] is False
    assert config.sources["OTEL_PERF_SLOW_QUERY_MS"] == "default"
    assert not config.problems


def test_valid_values_are_parsed_and_sourced() -> None:
    config = load(
        {
            "OTEL_PERF_SLOW_QUERY_MS": "25.5",
            "OTEL_PERF_REPORT": "YES",
            "OTEL_TRACES_EXPORTER": "otlp, console",
            "OTEL_PERF__FLAG_SOURCES": "OTEL_PERF_REPORT",
        }
    )
    assert config["OTEL_PERF_SLOW_QUERY_MS"] == 25.5
    assert config["OTEL_PERF_REPORT"] is True
    assert config["OTEL_TRACES_EXPORTER"] == ("otlp", "console")
    assert config.sources["OTEL_PERF_SLOW_QUERY_MS"] == "env"
    assert config.sources["OTEL_PERF_REPORT"] == "flag"


@pytest.mark.parametrize(
    ("env", "value", "reason"),
    [
        ("OTEL_TRACES_SAMPLER_ARG", "2", "above the maximum"),
        ("OTEL_PERF_SLOW_QUERY_MS", "fast", "expected a number"),
        ("OTEL_PERF_SLOW_QUERY_MS", "-5", "below the minimum"),
        ("OTEL_PERF_N_PLUS_ONE_THRESHOLD", "1.5", "expected an integer"),
        ("OTEL_PERF_REPORT", "maybe", "expected true or false"),
        ("OTEL_PERF_LOG_FORMAT", "xml", "expected one of json, text, off"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "expected an http"),
        ("OTEL_PERF_SLOW_REQUEST_MS", "nan", "finite"),
        ("OTEL_PERF_STATS_PATH", "perf", "expected a path"),
    ],
)
def test_bad_value_gives_one_clear_problem(env: str, value: str, reason: str) -> None:
    config = load({env: value})
    assert len(config.problems) == 1
    message = config.problems[0].message()
    assert env in message and repr(value) in message and reason in message
    assert f"using {BY_ENV[env].default!r}" in message or "using ''" in message
    assert config[env] == BY_ENV[env].default


def test_strict_mode_raises_naming_every_bad_variable() -> None:
    config = load({"OTEL_PERF_STRICT": "true", "OTEL_PERF_SLOW_QUERY_MS": "x", "OTEL_PERF_REPORT": "y"})
    with pytest.raises(ConfigError, match=r"OTEL_PERF_SLOW_QUERY_MS.*OTEL_PERF_REPORT"):
        config.raise_if_strict()


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README env-var table is stale: paste `otel-perf config --markdown`"
    used = set(
        re.findall(r"OTEL_PERF_[A-Z0-9_]+", "".join(p.read_text() for p in (ROOT / "src").rglob("*.py")))
    )
    private = {v for v in used if v.startswith("OTEL_PERF__")}
    assert used - private <= {s.env for s in SETTINGS}, "an OTEL_PERF_* variable is used but not declared"


def test_every_flag_has_an_env_twin_in_help() -> None:
    out = subprocess.run([launcher(), "--help"], capture_output=True, text=True, check=True).stdout
    for setting in SETTINGS:
        assert setting.flag_name in out and setting.env in out


def test_config_command_shows_sources_and_endpoint_check(otlp_receiver) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [str(BIN / "otel-perf"), "config", "--slow-query-ms", "42"],
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_PERF_REPORT": "true",
            "OTEL_PERF_STATS_TOKEN": "secret-value",
            "PATH": str(BIN),
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"OTEL_PERF_SLOW_QUERY_MS\s+flag\s+42", out)
    assert re.search(r"OTEL_PERF_REPORT\s+env\s+True", out)
    assert re.search(r"OTEL_PERF_N_PLUS_ONE_THRESHOLD\s+default\s+5", out)
    assert "secret-value" not in out
    assert "answers: POST /v1/traces -> HTTP 200" in out
    down = subprocess.run(
        [str(BIN / "otel-perf"), "config", "--endpoint", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": str(BIN)},
    ).stdout
    assert "does not answer" in down


@pytest.mark.slow
def test_bad_values_warn_once_and_the_app_serves(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    svc: Service = start_service(
        app_process,
        None,
        url,
        env={
            "OTEL_PERF_SLOW_QUERY_MS": "fast",
            "OTEL_PERF_N_PLUS_ONE_THRESHOLD": "-3",
            "OTEL_PERF__RAISE_ERRORS": "0",
        },
    )
    assert httpx.get(svc.base + "/items/1").status_code == 200
    svc.proc.stop()
    out = svc.proc.output()
    assert (
        out.count("OTEL_PERF_SLOW_QUERY_MS='fast' is invalid (expected a number); using 100.0 instead") == 1
    )
    assert out.count("OTEL_PERF_N_PLUS_ONE_THRESHOLD='-3' is invalid") == 1


@pytest.mark.slow
def test_strict_mode_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [launcher(), sys.executable, "-c", "print('app ran')"],
        env={"OTEL_PERF_STRICT": "true", "OTEL_PERF_SLOW_QUERY_MS": "fast", "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OTEL_PERF_SLOW_QUERY_MS='fast' is invalid" in result.stderr
    assert "app ran" not in result.stdout


@pytest.mark.slow
def test_launcher_finds_commands_of_its_own_environment_without_activation() -> None:
    result = subprocess.run(
        [launcher(), "uvicorn", "--version"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "uvicorn" in result.stdout.lower()
    missing = subprocess.run(
        [launcher(), "no-such-command-xyz"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 127 and "command not found: 'no-such-command-xyz'" in missing.stderr


@pytest.mark.parametrize(
    ("env", "name", "instance"),
    [
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,service.instance.id=pod-7,team=core"},
         "from-attrs", "pod-7"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=attrs", "OTEL_SERVICE_NAME": "named"}, "named", None),
        ({}, "pytest-entry", None),
    ],
)  # fmt: skip
def test_the_users_resource_attributes_win_over_our_defaults(
    env: dict[str, str], name: str, instance: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_RESOURCE_ATTRIBUTES names the service and its instance as under stock; ours (the
    command's name, a random instance id) fill in only what the user left unsaid."""
    import sys

    from otel_perf._setup.providers import build_resource

    for var in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest-entry"])
    attributes = build_resource(load(env)).attributes
    assert attributes["service.name"] == name
    if instance is not None:
        assert attributes["service.instance.id"] == instance and attributes["team"] == "core"
    else:
        assert len(str(attributes["service.instance.id"])) == 36  # ours: a UUID
    assert attributes["telemetry.distro.name"] == "otel-perf-instrument"


def test_endpoints_the_exporters_take_are_accepted() -> None:
    """OTLP/gRPC takes ``host:port`` (as stock does), a scheme is case-insensitive, and a
    rejected endpoint falls back to the port of the protocol in use."""
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    config = load({**grpc, "OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"})
    assert config.problems == [] and config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "127.0.0.1:4317"
    assert config.sources["OTEL_EXPORTER_OTLP_ENDPOINT"] == "env"
    config = load({"OTEL_EXPORTER_OTLP_ENDPOINT": "HTTP://127.0.0.1:4318"})
    assert config.problems == [] and config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "HTTP://127.0.0.1:4318"
    config = load({**grpc, "OTEL_EXPORTER_OTLP_ENDPOINT": "not an endpoint"})
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"
    assert "using 'http://localhost:4317'" in config.problems[0].message()
    config = load({"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"})  # OTLP/HTTP needs a URL
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318" and config.problems


@pytest.mark.parametrize(("value", "used", "warned"), [("true", True, False), ("TRUE", True, False),
                                                      ("false", False, False), ("1", False, True),
                                                      ("yes", False, True)])  # fmt: skip
def test_standard_booleans_are_true_only_when_true(value: str, used: bool, warned: bool) -> None:
    """The specification: "true" (any case) is true and anything else false, so
    OTEL_SDK_DISABLED=1 disables nothing, as under stock (with a warning here); our own
    switches also take 1/yes/on."""
    config = load({"OTEL_SDK_DISABLED": value, "OTEL_PERF_SERVER_TIMING": "yes"})
    assert config["OTEL_SDK_DISABLED"] is used
    assert bool(config.problems) is warned
    assert config["OTEL_PERF_SERVER_TIMING"] is True


def test_metric_interval_and_timeout_are_numbers_as_the_sdk_reads_them() -> None:
    """The SDK reads OTEL_METRIC_EXPORT_INTERVAL and _TIMEOUT with float(): 500.0 and 5000.5 are
    valid there, and so are they here; a short interval is the user's to choose."""
    from otel_perf._config import sdk_problems

    for value, used in (("500.0", 500.0), ("50", 50.0), ("2500", 2500.0)):
        config = load({"OTEL_METRIC_EXPORT_INTERVAL": value})
        assert config.problems == [] and config["OTEL_METRIC_EXPORT_INTERVAL"] == used
    assert sdk_problems({"OTEL_METRIC_EXPORT_TIMEOUT": "5000.5"}) == []
    [negative] = sdk_problems({"OTEL_METRIC_EXPORT_TIMEOUT": "-1"})
    assert negative.env == "OTEL_METRIC_EXPORT_TIMEOUT"
    assert load({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}).problems


def test_the_sampler_argument_is_checked_only_for_the_samplers_that_read_it() -> None:
    """A ratio sampler's argument is a number from 0 to 1; a static sampler the user chose ignores
    it (as the SDK does), so a leftover argument is no problem."""
    [problem] = load({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}).problems
    assert problem.env == "OTEL_TRACES_SAMPLER_ARG" and "above the maximum" in problem.message()
    assert load({"OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "x"}).problems == []


def test_a_log_format_logging_refuses_is_reported_and_the_default_used() -> None:
    """OTEL_PYTHON_LOG_FORMAT='{message}' (not %-style) would have failed the logging row: no
    lines, no export; it is one warning and the official instrumentation's format instead."""
    config = load({"OTEL_PYTHON_LOG_FORMAT": "{message}", "OTEL_PYTHON_LOG_CORRELATION": "true"})
    [problem] = config.problems
    assert problem.env == "OTEL_PYTHON_LOG_FORMAT" and "not a logging format" in problem.message()
    assert config["OTEL_PYTHON_LOG_FORMAT"] == ""
    assert load({"OTEL_PYTHON_LOG_FORMAT": "%(request_id)s %(message)s"}).problems == []  # a filter's field


def test_the_config_command_probes_a_grpc_host_port_endpoint_where_it_points() -> None:
    """``otel-perf config`` checks the collector the exporters will use: a gRPC ``host:port``
    endpoint is that host and port, not localhost."""
    import socket

    from otel_perf._cli.cmd_config import check_endpoint

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ok, said = check_endpoint(f"127.0.0.1:{port}", "grpc")
    assert ok and f"127.0.0.1:{port}" in said
