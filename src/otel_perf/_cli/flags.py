"""Launcher flags, generated from the settings table: every flag has an env var twin."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, MutableMapping

from otel_perf._config import FLAG_SOURCES_ENV, SETTINGS


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "settings", "Each flag sets the environment variable named after it (flag > env > default)."
    )
    for s in SETTINGS:
        kw: dict[str, object] = {
            "dest": s.env,
            "default": None,
            "metavar": "VALUE",
            "help": f"{s.doc} [env {s.env}; default {s.default!r}]".replace("%", "%%"),
        }
        if s.kind == "bool":
            kw.update(nargs="?", const="true", metavar="true|false")
        elif s.kind == "enum":
            kw["metavar"] = "|".join(s.choices)
        group.add_argument(s.flag_name, **kw)  # type: ignore[arg-type]


def apply_flags(args: argparse.Namespace, env: MutableMapping[str, str]) -> list[str]:
    """Write given flags into ``env``; return the variable names set from flags."""
    from_flags = []
    for s in SETTINGS:
        value = getattr(args, s.env, None)
        if value is None:
            continue
        env[s.env] = str(value)
        from_flags.append(s.env)
    previous = [x for x in env.get(FLAG_SOURCES_ENV, "").split(",") if x]
    env[FLAG_SOURCES_ENV] = ",".join(sorted(set(previous) | set(from_flags)))
    return from_flags


def env_help(env: Mapping[str, str] | None = None) -> str:
    lines = ["environment variables (also settable by the flags above):"]
    for s in SETTINGS:
        lines.append(f"  {s.env:<40} {s.flag_name}")
    return "\n".join(lines)
