"""The launcher's own options end where the wrapped command begins.

Only options *before* the command are ours; none is ever recognised by an abbreviation, so
a command's flags that share a prefix with ours (uvicorn's ``--loop`` and ``--log-level``,
gunicorn's ``--statsd-host`` and ``--capture-output``...) reach the command untouched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from otel_perf._cli import launcher
from support.launch import APPS, BIN
from support.launch import launcher as launcher_path
from support.procs import AppProcess, free_port


def _split(*argv: str) -> tuple[list[str], list[str]]:
    return launcher.split(list(argv), launcher.parser())


@pytest.mark.parametrize(
    "command",
    [
        ["uvicorn", "app:app", "--loop", "uvloop", "--log-level", "debug", "--reload"],
        ["gunicorn", "-w", "2", "--statsd-host", "x:1", "--capture-output", "--log-level", "info", "app:app"],
        ["fastapi", "run", "main.py", "--port", "8001", "--reload"],
        ["python", "-m", "uvicorn", "app:app", "--loop", "asyncio", "--report"],
        ["python", "--strict", "app.py"],
    ],
)
def test_everything_from_the_command_on_is_the_commands(command: list[str]) -> None:
    assert _split(*command) == ([], command)
    ours, rest = _split("--report", "--slow-query-ms", "50", *command)
    assert (ours, rest) == (["--report", "--slow-query-ms", "50"], command)
    args = launcher.parser().parse_args(ours)
    assert (args.OTEL_PERF_REPORT, args.OTEL_PERF_SLOW_QUERY_MS) == ("true", "50")


def test_a_true_false_flag_takes_a_value_only_when_one_follows() -> None:
    assert _split("--report", "uvicorn", "a:b") == (["--report"], ["uvicorn", "a:b"])
    assert _split("--report", "false", "uvicorn") == (["--report", "false"], ["uvicorn"])
    assert _split("--report=off", "uvicorn") == (["--report=off"], ["uvicorn"])


def test_double_dash_ends_our_options() -> None:
    assert _split("--report", "--", "--weird-command", "--report") == (
        ["--report"],
        ["--weird-command", "--report"],
    )


@pytest.mark.parametrize("abbreviation", ["--loop", "--log", "--stats", "--slow", "--capture", "--rep"])
def test_no_abbreviation_of_our_flags_is_accepted(
    abbreviation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _split(abbreviation, "1", "uvicorn", "app:app")
    assert exit_info.value.code == 2
    assert f"unknown option '{abbreviation}'" in capsys.readouterr().err


def test_opentelemetry_instrument_flags_set_their_variables() -> None:
    ours, rest = _split("--traces_exporter", "console", "--service_name", "shop", "python", "app.py")
    assert rest == ["python", "app.py"]
    env = launcher.child_environment(launcher.parser().parse_args(ours), {})
    assert (env["OTEL_TRACES_EXPORTER"], env["OTEL_SERVICE_NAME"]) == ("console", "shop")


@pytest.mark.parametrize("tool", ["otel-perf-instrument", "otel-perf"])
def test_version(tool: str) -> None:
    from otel_perf import __version__

    out = subprocess.run([str(BIN / tool), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{tool} {__version__}"


@pytest.mark.slow
def test_uvicorn_flags_sharing_our_prefixes_start_the_app(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """``otel-perf-instrument uvicorn service:app --loop asyncio --log-level warning`` serves
    (issue 16: it refused with "ambiguous option: --loop could match --loop-monitor, ...")."""
    port = free_port()
    proc = app_process(
        [
            launcher_path(),
            str(BIN / "uvicorn"),
            "service:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--loop",
            "asyncio",
            "--log-level",
            "warning",
        ],
        {
            "PYTHONPATH": str(APPS),
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    assert proc.wait_http(f"http://127.0.0.1:{port}/hello") == 200
    assert httpx.get(f"http://127.0.0.1:{port}/hello").headers["traceresponse"].startswith("00-")


def test_start_up_leaves_unused_heavy_modules_unimported(tmp_path: Path) -> None:
    """Under the launcher, with no budgets or views file and a plain-http endpoint, neither
    ``yaml`` (read only with those files) nor ``requests`` (the SDK's default transport) is
    imported: together about 5 MB of RSS in every process.  (Celery is off here: the official
    Celery instrumentation imports celery, and kombu imports yaml, whenever it is installed.)"""
    probe = "import sys; print(sorted({'yaml', 'requests'} & set(sys.modules)))"
    env = {
        "PATH": str(BIN),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "OTEL_PERF_SHUTDOWN_TIMEOUT": "0.5",
        "OTEL_PERF_LOG_FORMAT": "off",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery",
    }
    out = subprocess.run(
        [str(BIN / "otel-perf-instrument"), "python", "-c", probe],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
