"""``otel-perf-instrument [flags] COMMAND [ARGS...]``: run any command with telemetry.

Like ``opentelemetry-instrument``, it puts a folder holding only our ``sitecustomize``
first on ``PYTHONPATH`` and ``exec``s the command, so every Python process the command
starts (uvicorn workers and reloaders, gunicorn workers, ``python app.py``) bootstraps
itself at interpreter start.  Flags become environment variables of the child.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence

from otel_perf._cli.flags import add_setting_flags, apply_flags, env_help
from otel_perf._config import Config, load, strict_errors

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bootstrap")
#: Header values never exported, whatever capture settings say.
SENSITIVE_HEADERS = ("authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key")
SANITIZE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"


def sanitize_fields(env: dict[str, str]) -> str:
    """The contrib instrumentations' header-sanitize list: the user's entries, then ours.

    We capture no headers ourselves; the contrib httpx instrumentation does when
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` is set, and exports every header it
    matches except those this list names (their values become ``[REDACTED]``).
    """
    extra = load(env).items("OTEL_PERF_SENSITIVE_HEADERS")
    fields = [f.strip() for f in env.get(SANITIZE_ENV, "").split(",") if f.strip()]
    for name in (*SENSITIVE_HEADERS, *extra):
        pattern = re.escape(name.lower())
        if pattern not in fields:
            fields.append(pattern)
    return ",".join(fields)


def resolve_command(command: str, path: str | None) -> str | None:
    """``command`` on PATH, else next to this interpreter.

    ``.venv/bin/otel-perf-instrument uvicorn app:app`` then runs that venv's uvicorn even when
    the venv is not activated, as the user evidently meant.
    """
    found = shutil.which(command, path=path)
    if found is None and os.sep not in command:
        found = shutil.which(command, path=os.path.dirname(sys.executable))
    return found


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otel-perf-instrument",
        description="Run COMMAND with OpenTelemetry traces, RED metrics, correlated logs and "
        "performance findings. Example: otel-perf-instrument uvicorn app.main:app --port 8000",
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_flags(p)
    p.add_argument("command", help="the program to run (uvicorn, gunicorn, fastapi, python, ...)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return p


def child_environment(args: argparse.Namespace, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    apply_flags(args, env)
    path = env.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *parts])
    env.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    env[SANITIZE_ENV] = sanitize_fields(env)
    return env


__all__ = ["Config", "main", "strict_errors"]


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    env = child_environment(args, dict(os.environ))
    config = load(env)
    errors = strict_errors(config, env) if config.strict else []
    if errors:
        # The refusal alone: no warnings first (strict mode uses nothing instead of a bad value).
        listed = "".join(f"\n  {error}" for error in errors)
        sys.stderr.write(f"otel-perf-instrument: refusing to start (OTEL_PERF_STRICT=true):{listed}\n")
        raise SystemExit(2)
    executable = resolve_command(args.command, env.get("PATH"))
    if executable is None:
        sys.stderr.write(
            f"otel-perf-instrument: command not found: {args.command!r} (is it installed in this "
            "environment and on PATH?)\n"
        )
        raise SystemExit(127)
    os.execve(executable, [args.command, *args.args], env)


if __name__ == "__main__":
    main()
