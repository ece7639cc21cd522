"""``otel-perf``: the tools.  Each subcommand lives in its own ``_cli/cmd_*.py`` module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Subcommand modules, each with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = ("config", "instrumentations", "demo", "rules", "loadtest", "stats")


def main(argv: Sequence[str] | None = None) -> None:
    from otel_perf import __version__

    parser = argparse.ArgumentParser(prog="otel-perf", description="otel-perf-instrument tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    modules = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"otel_perf._cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"otel_perf._cli.cmd_{name}":
                raise
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        modules[module.NAME] = module
    args = parser.parse_args(argv)
    sys.exit(modules[args.tool].run(args))


if __name__ == "__main__":
    main()
