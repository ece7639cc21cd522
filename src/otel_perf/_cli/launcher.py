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

from otel_perf import __version__
from otel_perf._cli.flags import add_setting_flags, apply_flags, env_help
from otel_perf._config import SETTINGS, Config, load, strict_errors

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
    """Our flags, for ``--help`` and for parsing the options *before* the command (see :func:`split`)."""
    p = argparse.ArgumentParser(
        prog="otel-perf-instrument",
        usage="%(prog)s [flags] COMMAND [ARGS...]",
        description="Run COMMAND with OpenTelemetry traces, RED metrics, correlated logs and "
        "performance findings. Example: otel-perf-instrument uvicorn app.main:app --port 8000. "
        "Only flags before COMMAND are ours; everything from COMMAND on is passed to it untouched. "
        "opentelemetry-instrument's flags (--traces_exporter, --service_name, ...) work too.",
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_setting_flags(p)
    for flag, env in standard_flags().items():
        p.add_argument(flag, dest=f"standard:{env}", metavar="VALUE", help=argparse.SUPPRESS)
    return p


def standard_flags() -> dict[str, str]:
    """``opentelemetry-instrument``'s flags: ``--<variable>`` for every OTEL_ variable the
    installed OpenTelemetry packages declare (``OTEL_`` and ``OTEL_PYTHON_`` stripped, lower case)."""
    from importlib.metadata import entry_points

    ours = {s.flag_name for s in SETTINGS}
    flags: dict[str, str] = {}
    for entry_point in entry_points(group="opentelemetry_environment_variables"):
        try:
            module = entry_point.load()
        except Exception:  # a broken package must not stop the launcher
            continue
        for attribute in dir(module):
            if attribute.startswith("OTEL_"):
                flag = "--" + re.sub(r"^OTEL_(PYTHON_)?", "", attribute).lower()
                if flag not in ours:
                    flags[flag] = attribute
    return flags


def flag_arity() -> dict[str, str]:
    """Every option of ours before the command: "0" (stands alone), "?" (true/false) or "1" (a value)."""
    arity = {"-h": "0", "--help": "0", "--version": "0"}
    for s in SETTINGS:
        arity[s.flag_name] = "?" if s.kind == "bool" else "1"
    for flag in standard_flags():
        arity[flag] = "1"
    return arity


def split(argv: Sequence[str], p: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``(our options, command and its arguments)``.

    Options are ours only up to the first word that is not one of our options (or ``--``):
    whatever follows belongs to the command, even when it looks like one of our flags, and
    no abbreviation of our flags is accepted anywhere (``uvicorn app:app --loop uvloop``
    keeps its ``--loop``).  A true/false flag takes a following ``true``/``false`` word as
    its value and otherwise stands alone (``--report uvicorn ...``).
    """
    arity = flag_arity()
    ours: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return ours, list(argv[i + 1 :])
        if not word.startswith("-") or word == "-":
            break
        name, has_value, _ = word.partition("=")
        kind = arity.get(name)
        if kind is None:
            p.error(
                f"unknown option {name!r} before the command. Our options come first "
                "(see --help); put '--' before a command that starts with '-'."
            )
        ours.append(word)
        i += 1
        if has_value or kind == "0":
            continue
        if kind == "?":  # a true/false flag: a value only if one follows
            if i < len(argv) and argv[i].strip().lower() in _BOOL_WORDS:
                ours.append(argv[i])
                i += 1
            continue
        if i >= len(argv):
            p.error(f"{name} needs a value")
        ours.append(argv[i])
        i += 1
    return ours, list(argv[i:])


_BOOL_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})


def child_environment(args: argparse.Namespace, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    apply_flags(args, env)
    for key, value in vars(args).items():
        if key.startswith("standard:") and value is not None:
            env[key.removeprefix("standard:")] = value
    path = env.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    # As opentelemetry-instrument does: the working directory on the path, for apps started
    # through their own executable (Django's manage.py in a project folder).
    cwd = os.getcwd()
    if cwd not in parts:
        parts.insert(0, cwd)
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *parts])
    env.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    env[SANITIZE_ENV] = sanitize_fields(env)
    return env


__all__ = ["Config", "main", "split", "strict_errors"]


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    words = list(sys.argv[1:] if argv is None else argv)
    options, command = split(words, p)
    args = p.parse_args(options)
    if not command:
        p.error("no COMMAND to run (e.g. otel-perf-instrument uvicorn app.main:app)")
    env = child_environment(args, dict(os.environ))
    config = load(env)
    errors = strict_errors(config, env) if config.strict else []
    if errors:
        # The refusal alone: no warnings first (strict mode uses nothing instead of a bad value).
        listed = "".join(f"\n  {error}" for error in errors)
        sys.stderr.write(f"otel-perf-instrument: refusing to start (OTEL_PERF_STRICT=true):{listed}\n")
        raise SystemExit(2)
    executable = resolve_command(command[0], env.get("PATH"))
    if executable is None:
        sys.stderr.write(
            f"otel-perf-instrument: command not found: {command[0]!r} (is it installed in this "
            "environment and on PATH?)\n"
        )
        raise SystemExit(127)
    os.execve(executable, command, env)


if __name__ == "__main__":
    main()
