"""``otel-perf rules``: Prometheus SLO recording and alerting rules from a budgets file.

Prints the rules (or writes them with ``-o``); ``--tests`` also writes ``promtool test rules``
cases proving that a fast burn pages, a slow burn tickets and healthy traffic stays silent;
``--check`` runs ``promtool check rules`` and ``promtool test rules`` on the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from otel_perf._analysis.budgets import BudgetError, load_budgets
from otel_perf._export.slo_rules import build_slos, promtool_tests, render_yaml, rule_groups

NAME = "rules"
HELP = "Generate Prometheus SLO recording and multi-window burn-rate alert rules from a budgets file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("budgets", help="budgets file (YAML), e.g. perf-budgets.yaml")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the rules here instead of stdout")
    parser.add_argument("--tests", metavar="FILE",
                        help="also write promtool unit tests for the rules (needs --output)")
    parser.add_argument("--job", help="Prometheus job label to select (default: the file's `service`; "
                                      "none: every job)")
    parser.add_argument("--check", action="store_true",
                        help="run `promtool check rules` and `promtool test rules` on the output")


def _header(budgets_path: str, argv: str) -> str:
    return (f"Generated from {budgets_path} by: otel-perf rules {argv}\n"
            "Do not edit: change the budgets file and regenerate. 30-day SLO window;\n"
            "multi-window multi-burn-rate alerts (Google SRE workbook, chapter 5).")


def _promtool(args: list[str]) -> tuple[int, str]:
    tool = shutil.which("promtool")
    if tool is None:
        return 127, "promtool not found on PATH (Debian/Ubuntu: apt-get install prometheus)"
    proc = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def run(args: argparse.Namespace) -> int:
    if args.tests and not args.output:
        print("otel-perf rules: --tests needs --output (the tests refer to the rules file by path)",
              file=sys.stderr)
        return 2
    try:
        budgets = load_budgets(args.budgets)
    except BudgetError as exc:
        print(f"otel-perf rules: {exc}", file=sys.stderr)
        return 2
    shown = args.budgets + (f" --job {args.job}" if args.job is not None else "")
    rules = render_yaml(rule_groups(budgets, args.job), _header(args.budgets, shown))
    slos = build_slos(budgets)
    if not slos and not budgets.page_bounds():
        print(f"otel-perf rules: {args.budgets} defines no p95_ms, p99_ms, error_rate, availability or "
              "page-load objective; nothing to alert on.", file=sys.stderr)
    workdir = None
    output = args.output
    if output is None:
        sys.stdout.write(rules)
        if not args.check:
            return 0
        workdir = tempfile.mkdtemp(prefix="otel-perf-rules-")
        output = os.path.join(workdir, "slo-rules.yml")
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(rules)
        tests_path = args.tests
        if tests_path:
            rel = os.path.relpath(os.path.abspath(output), os.path.dirname(os.path.abspath(tests_path)))
            tests = render_yaml(promtool_tests(budgets, rel, args.job), _header(args.budgets, shown))
            with open(tests_path, "w", encoding="utf-8") as f:
                f.write(tests)
        if args.output:
            print(f"wrote {len(slos)} SLOs to {output}" + (f", tests to {tests_path}" if tests_path else ""),
                  file=sys.stderr)
        if not args.check:
            return 0
        if not tests_path:
            workdir = workdir or tempfile.mkdtemp(prefix="otel-perf-rules-")
            tests_path = os.path.join(workdir, "slo-rules.test.yml")
            rel = os.path.relpath(os.path.abspath(output), os.path.dirname(tests_path))
            with open(tests_path, "w", encoding="utf-8") as f:
                f.write(render_yaml(promtool_tests(budgets, rel, args.job)))
        code, out = _promtool(["check", "rules", output])
        print(out, file=sys.stderr)
        if code != 0:
            return 1
        code, out = _promtool(["test", "rules", tests_path])
        print(out, file=sys.stderr)
        return 0 if code == 0 else 1
    except OSError as exc:
        print(f"otel-perf rules: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
