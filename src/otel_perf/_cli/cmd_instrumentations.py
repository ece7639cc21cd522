"""``otel-perf instrumentations``: for the libraries installed here, what instruments each.

Like ``opentelemetry-bootstrap``, from contrib's library -> instrumentation table: for every
library installed in this environment, whether ours instruments it, an official
instrumentation installed beside us does, or which package (or extra of ours) to install.
"""

from __future__ import annotations

import argparse

NAME = "instrumentations"
HELP = "List, for the libraries installed here, what instruments each and what to install for the rest."

_BY = {
    "ours": "ours",
    "official": "official, installed",
    "install": "official, not installed",
    "unsupported": "none for this version",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requirements",
        action="store_true",
        help="print only the official instrumentations to install, one requirement a line "
        "(as `opentelemetry-bootstrap -a requirements`, without those ours replaces)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's library table (every library we instrument ourselves) and exit",
    )


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        from otel_perf._integrations import markdown_table

        print(markdown_table())
        return 0
    from otel_perf._setup.integrations import coverage

    rows = coverage()
    if args.requirements:
        for row in rows:
            if row.by == "install":
                print(row.requirement)
        return 0
    table = [
        (
            row.library,
            row.version,
            f"{_BY[row.by]} ({row.name})",
            row.install or row.detail,
        )
        for row in rows
    ]
    header = ("library", "version", "instrumented by", "to install / what it gives")
    widths = [max(len(r[i]) for r in (header, *table)) for i in range(3)]
    for line in (header, *table):
        print(f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]:<{widths[2]}}  {line[3]}")
    missing = [row.requirement for row in rows if row.by == "install"]
    if missing:
        print(
            f"\n{len(missing)} official instrumentation(s) to install: otel-perf instrumentations "
            "--requirements | pip install -r /dev/stdin"
        )
    return 0
