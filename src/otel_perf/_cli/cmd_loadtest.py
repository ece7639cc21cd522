"""``otel-perf loadtest``: drive a running service with Locust, compare with budgets and a baseline.

Exit status: 0 every gate passed; 1 a budget was breached or a regression found; 2 bad
input (arguments, scenario, budgets or baseline file); 3 the run itself failed (target
unreachable, no request answered).  Locust is imported only once the run starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from otel_perf import __version__
from otel_perf._analysis.budgets import BudgetError, Budgets, load_budgets, parse_duration
from otel_perf._analysis.regression import Thresholds, compare_runs
from otel_perf._loadtest.gates import check_budgets, render_breaches
from otel_perf._loadtest.results import Collector, summarise
from otel_perf._loadtest.scenario import Scenario, ScenarioError, load_scenario
from otel_perf._loadtest.server import (
    ServerError,
    fetch_stats,
    fetch_summary,
    prometheus_view,
    reset_stats,
)
from otel_perf._loadtest.tagging import new_run_id, tag_headers

NAME = "loadtest"
HELP = "Load-test a running service with Locust; check budgets, detect regressions, write JSON/HTML reports."

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_RUN = 0, 1, 2, 3
BASELINE_SCHEMA = "otel-perf-baseline/1"
#: Samples kept per endpoint and baseline run, and baseline runs kept (oldest dropped).
BASELINE_SAMPLES = 3000
BASELINE_RUNS = 10


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("what to run")
    run.add_argument("--host", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    run.add_argument("-f", "--scenario", required=True, metavar="FILE",
                     help="YAML scenario of weighted requests, a Locust .py file, or `demo` (bundled)")
    run.add_argument("-u", "--users", type=_positive_int,
                     help="concurrent users (default: budgets `load.users`, else 10)")
    run.add_argument("-r", "--spawn-rate", type=_positive_float,
                     help="users started per second (default: budgets `load.spawn_rate`, else users/5)")
    run.add_argument("-t", "--duration", type=_duration,
                     help="run time, e.g. 30s, 2m (default: budgets `load.duration`, else 30s)")
    run.add_argument("--max-requests", type=_positive_int, default=0,
                     help="stop after this many requests; those in flight then still finish, so a "
                          "few more may be counted (default: no limit besides the duration)")
    run.add_argument("--warmup", type=_duration, default=None,
                     help="leave the first part of the run (ramp-up, cold caches) out of the results, "
                          "e.g. 2s; its requests still show in the timeline")
    run.add_argument("--timeout", type=_duration, default=10.0, help="per-request timeout (default 10s)")
    run.add_argument("--run-id", help="tag for this run's requests (baggage); default: time + random")
    run.add_argument("-q", "--quiet", action="store_true", help="no live progress")

    server = parser.add_argument_group("server-side numbers")
    server.add_argument("--stats-path", default=os.environ.get("OTEL_PERF_STATS_PATH") or "/_perf",
                        help="the app's stats endpoint path (default: $OTEL_PERF_STATS_PATH or /_perf)")
    server.add_argument("--stats-token", default=os.environ.get("OTEL_PERF_STATS_TOKEN", ""),
                        help="bearer token of the stats endpoint (default: $OTEL_PERF_STATS_TOKEN); its "
                             "window is reset at the start of the run")
    server.add_argument("--prometheus", metavar="URL", help="read server-side numbers from this Prometheus")
    server.add_argument("--job", default="", help="Prometheus job of the service (with --prometheus)")

    gates = parser.add_argument_group("gates")
    gates.add_argument("--budgets", metavar="FILE", help="fail (exit 1) when a route breaks its budget")
    gates.add_argument("--fail-on", choices=("target", "critical"), default="target",
                       help="fail on a budget's target (default) or only on its critical level")
    gates.add_argument("--gate-on", choices=("client", "server"), default="client",
                       help="latency the budgets are checked against (default: client, what users see)")
    gates.add_argument("--baseline", metavar="FILE",
                       help="fail (exit 1) on a regression against this baseline")
    gates.add_argument("--save-baseline", metavar="FILE", help="save this run as a new baseline")
    gates.add_argument("--append-baseline", metavar="FILE",
                       help="add this run to a baseline (created if missing); with 2+ runs the regression "
                            "check also knows how much runs of the same build vary")
    gates.add_argument("--alpha", type=_positive_float, default=0.01,
                       help="significance level after Holm adjustment (default 0.01)")
    defaults = Thresholds()
    gates.add_argument("--min-effect", type=float, default=defaults.min_effect,
                       help=f"smallest Cliff's delta that counts (default {defaults.min_effect:g}: "
                            "at least a medium effect)")
    gates.add_argument("--min-shift-ms", type=float, default=defaults.min_shift_ms,
                       help=f"smallest median shift that counts, in ms (default {defaults.min_shift_ms:g})")
    gates.add_argument("--min-shift-pct", type=float, default=defaults.min_shift_ratio * 100,
                       help="smallest median shift that counts, in %% of the baseline median "
                            f"(default {defaults.min_shift_ratio * 100:g})")

    out = parser.add_argument_group("reports")
    out.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with charts")


def _fail(code: int, message: str) -> int:
    print(f"otel-perf loadtest: {message}", file=sys.stderr)
    return code


def _load_baseline(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such baseline; create one with --save-baseline {path}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable baseline ({exc}); re-create it with --save-baseline") \
            from None
    if (not isinstance(doc, dict) or doc.get("schema") != BASELINE_SCHEMA
            or not isinstance(doc.get("runs"), list) or not doc["runs"]):
        raise ValueError(f"{path}: not an otel-perf baseline (schema {BASELINE_SCHEMA}); re-create it with "
                         "--save-baseline")
    for i, run in enumerate(doc["runs"]):
        endpoints = run.get("endpoints") if isinstance(run, dict) else None
        if not isinstance(endpoints, dict):
            raise ValueError(f"{path}: run {i} has no endpoints; re-create the baseline")
        for key, ep in endpoints.items():
            samples = ep.get("samples_ms") if isinstance(ep, dict) else None
            if not isinstance(samples, list) or not all(isinstance(v, (int, float)) for v in samples):
                raise ValueError(f"{path}: run {i}, endpoint {key!r} has no numeric samples_ms; re-create "
                                 "the baseline")
    return doc


def _baseline_run(collector: Collector, report: dict[str, Any]) -> dict[str, Any]:
    import random

    rng = random.Random(0)
    endpoints = {}
    for key, ep in collector.endpoints.items():
        samples = ep.samples
        if len(samples) > BASELINE_SAMPLES:
            samples = rng.sample(samples, BASELINE_SAMPLES)
        endpoints[key] = {"requests": ep.count, "failures": ep.failures,
                          "samples_ms": [round(v, 3) for v in samples]}
    return {"run": report["run"], "endpoints": endpoints}


def _baseline_doc(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": BASELINE_SCHEMA, "tool": f"otel-perf {__version__}", "runs": runs[-BASELINE_RUNS:]}


def _reachable(host: str, timeout: float = 3.0) -> str | None:
    parts = urlsplit(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port} ({exc.strerror or exc}); is the service running?"


def _progress(quiet: bool, duration: float, target_users: int) -> Any:
    if quiet:
        return None
    tty = sys.stderr.isatty()
    every = 1.0 if tty else 5.0
    last = {"at": -every}

    def show(elapsed: float, users: int, collector: Collector) -> None:
        if not tty and elapsed - last["at"] < every:
            return
        last["at"] = elapsed
        now = time.time()
        rps, _fails, p95 = collector.recent(now)
        phase = "  (warm-up)" if now < collector.warmup_until else ""
        shown = "-" if math.isnan(p95) else f"{p95:.1f} ms"
        line = (f"[{elapsed:5.0f}s/{duration:.0f}s] users {users}/{target_users}  {rps:7.1f} req/s  "
                f"requests {collector.seen}  failures {collector.seen_failures}  p95 {shown}{phase}")
        sys.stderr.write(("\r" + line.ljust(100)) if tty else line + "\n")
        sys.stderr.flush()

    return show


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _results_table(report: dict[str, Any]) -> list[str]:
    header = ["endpoint", "requests", "rps", "errors", "p50", "p95", "p99", "|",
              "srv p50", "srv p95", "srv p99"]
    rows = []
    for ep in report["endpoints"]:
        c, s = ep["client"], ep.get("server") or {}
        rows.append([ep["key"], str(ep["requests"]), f"{ep['rps']:.1f}", f"{ep['error_rate']:.1%}",
                     _fmt(c["p50_ms"]), _fmt(c["p95_ms"]), _fmt(c["p99_ms"]), "|",
                     _fmt(s.get("p50_ms")), _fmt(s.get("p95_ms")), _fmt(s.get("p99_ms"))])
    t = report["totals"]
    rows.append(["total", str(t["requests"]), f"{t['rps']:.1f}", f"{t['error_rate']:.1%}", _fmt(t["p50_ms"]),
                 _fmt(t["p95_ms"]), _fmt(t["p99_ms"]), "|", "", "", ""])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]

    def line(row: list[str]) -> str:
        cells = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells)

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append("latency in ms; client = what the load generator saw, srv = the app's own histogram")
    return out


def _regression_lines(regression: dict[str, Any], path: str) -> list[str]:
    lines = [f"regression check against {path} (Mann-Whitney U, Holm-adjusted; Cliff's delta; "
             "Hodges-Lehmann shift with 95% CI):"]
    for c in regression["latency"]:
        base = f"p50 {_fmt(c['baseline_p50_ms'])} -> {_fmt(c['current_p50_ms'])} ms"
        mark = {"regression": "REGRESSION", "improvement": "faster", "no change": "ok",
                "insufficient data": "n/a"}[c["verdict"]]
        lines.append(f"  {mark:<10} {c['key']}: {base}; {c['reason']}")
    for e in regression["errors"]:
        if e["verdict"] == "regression":
            lines.append(f"  REGRESSION {e['key']}: error rate {e['baseline_rate']:.2%} -> "
                         f"{e['current_rate']:.2%} (adjusted p {e['p_adjusted']:.2g})")
    return lines


def _resolve_load(args: argparse.Namespace, budgets: Budgets | None) -> tuple[int, float, float]:
    load = budgets.load if budgets is not None else None
    users = args.users or (load.users if load and load.users else 10)
    spawn = args.spawn_rate or (load.spawn_rate if load and load.spawn_rate else max(1.0, users / 5))
    duration = args.duration or (load.duration_s if load and load.duration_s else 30.0)
    return users, spawn, duration


def run(args: argparse.Namespace) -> int:
    parts = urlsplit(args.host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _fail(EXIT_INPUT, f"--host {args.host!r} is not a URL like http://127.0.0.1:8000")
    try:
        scenario: Scenario = load_scenario(args.scenario)
        budgets = load_budgets(args.budgets) if args.budgets else None
        baseline = _load_baseline(args.baseline) if args.baseline else None
        appended = None
        if args.append_baseline and os.path.exists(args.append_baseline):
            appended = _load_baseline(args.append_baseline)
    except (ScenarioError, BudgetError, ValueError) as exc:
        return _fail(EXIT_INPUT, str(exc))
    users, spawn_rate, duration = _resolve_load(args, budgets)
    warmup = args.warmup or 0.0
    if warmup >= duration:
        return _fail(EXIT_INPUT, f"--warmup {warmup:g}s leaves nothing of the {duration:g}s run to measure")
    unreachable = _reachable(args.host)
    if unreachable:
        return _fail(EXIT_RUN, f"{args.host}: {unreachable}")

    run_id = args.run_id or new_run_id()
    headers = tag_headers(run_id, scenario.name)
    print(f"otel-perf loadtest {__version__}: run {run_id}, scenario {scenario.name}, {users} users "
          f"(spawn {spawn_rate:g}/s) for {duration:g}s against {args.host}", flush=True)

    notes: list[str] = []
    stats = {"use": bool(args.stats_token)}

    def reset_server_window() -> None:
        if not stats["use"]:
            return
        try:
            reset_stats(args.host, args.stats_path, args.stats_token)
        except ServerError as exc:
            notes.append(f"server side from the stats endpoint unavailable: {exc}")
            stats["use"] = False

    if not warmup:
        reset_server_window()

    from otel_perf._loadtest import runner  # imports Locust (gevent monkey-patching) only now

    collector = Collector(warmup_s=warmup)
    try:
        info = runner.run(scenario, args.host, users, spawn_rate, duration, collector, headers,
                          max_requests=args.max_requests, timeout_s=args.timeout,
                          progress=_progress(args.quiet, duration, users),
                          at_warmup_end=reset_server_window if warmup else None)
    except ValueError as exc:
        return _fail(EXIT_INPUT, str(exc))
    if not args.quiet:
        sys.stderr.write("\n" if sys.stderr.isatty() else "")
    elapsed = info.ended - info.started

    server: dict[tuple[str, str], dict[str, Any]] = {}
    server_database: list[dict[str, Any]] = []
    if stats["use"]:
        try:
            summary = fetch_summary(args.host, args.stats_path, args.stats_token)
            server = fetch_stats(args.host, args.stats_path, args.stats_token, summary)
            server_database = list(summary.get("database") or [])
        except ServerError as exc:
            notes.append(f"server side from the stats endpoint unavailable: {exc}")
    if args.prometheus:
        try:
            time.sleep(1.0)  # one more scrape, so the run's last second is in
            server = prometheus_view(args.prometheus, info.started + warmup, time.time(), args.job) or server
        except ServerError as exc:
            notes.append(f"server side from Prometheus unavailable: {exc}")
    if not server and not notes:
        notes.append("server side not measured: pass --stats-token (or set OTEL_PERF_STATS_TOKEN) or "
                     "--prometheus")

    run_meta = {
        "id": run_id, "scenario": scenario.name, "scenario_source": scenario.source, "host": args.host,
        "users": users, "spawn_rate": spawn_rate, "duration_s": round(elapsed, 3), "warmup_s": warmup,
        "planned_duration_s": duration,
        "started": info.started, "ended": info.ended, "stop_reason": info.stop_reason,
        "peak_users": info.peak_users, "max_requests": args.max_requests or None,
        "baggage": headers["baggage"], "tool": f"otel-perf {__version__}",
    }
    report = summarise(collector, run_meta, server)
    report["server_database"] = server_database
    report["notes"] = notes
    exit_code = EXIT_OK

    print()
    print("\n".join(_results_table(report)))
    for note in notes:
        print(f"note: {note}")

    if collector.total == 0 or (info.stop_reason == "target unreachable"):
        exit_code = EXIT_RUN
        print(f"\nFAIL: the run got no answers ({info.stop_reason}); nothing to judge.")

    if budgets is not None:
        gate = check_budgets(report, budgets, args.gate_on, args.fail_on)
        report["budgets"] = gate
        levels = "critical levels" if args.fail_on == "critical" else "targets"
        print(f"\nbudgets {args.budgets} ({len(gate['checks'])} checks of the {levels}, latency on the "
              f"{args.gate_on} side): ", end="")
        if gate["breaches"]:
            exit_code = exit_code or EXIT_GATE
            routes = sorted({b["key"] for b in gate["breaches"]})
            print(f"FAIL, {len(gate['breaches'])} breach(es) on {', '.join(routes)}")
            print("\n".join(render_breaches(gate)))
        else:
            print("PASS")
        for note in gate["notes"]:
            print(f"note: {note}")
        for u in gate["unexercised"]:
            hint = f" (did you mean {u['did_you_mean']}?)" if u["did_you_mean"] else ""
            print(f"note: budget route {u['key']} got no requests in this run{hint}")

    if baseline is not None:
        thresholds = Thresholds(alpha=args.alpha, min_effect=args.min_effect, min_shift_ms=args.min_shift_ms,
                                min_shift_ratio=args.min_shift_pct / 100.0)
        runs = baseline["runs"]
        errors: dict[str, tuple[int, int]] = {}
        for r in runs:
            for k, v in r["endpoints"].items():
                f, n = errors.get(k, (0, 0))
                errors[k] = (f + int(v.get("failures", 0)), n + int(v.get("requests", 0)))
        comparison = compare_runs(
            [{k: v["samples_ms"] for k, v in r["endpoints"].items()} for r in runs],
            {k: ep.samples for k, ep in collector.endpoints.items()},
            thresholds,
            errors,
            {k: (ep.failures, ep.count) for k, ep in collector.endpoints.items()},
        )
        regression = comparison.as_dict()
        base_run = runs[-1].get("run", {})
        regression["baseline"] = {"path": args.baseline, "runs": len(runs), "last_run": base_run}
        differs = [f"{k} {base_run.get(k)!r} vs {run_meta[k]!r}" for k in ("scenario", "users")
                   if base_run.get(k) != run_meta[k]]
        if differs:
            regression["warning"] = "runs differ: " + ", ".join(differs)
        report["regression"] = regression
        print()
        print("\n".join(_regression_lines(regression, args.baseline)))
        if len(runs) < 2:
            print("  note: a baseline of one run cannot tell run-to-run noise from a change; add runs of the "
                  "same build with --append-baseline")
        if regression.get("warning"):
            print(f"  warning: {regression['warning']}; the comparison may not be like for like")
        # Percentile curves of the baseline, for the report's chart.
        from otel_perf._loadtest.results import PERCENTILE_POINTS, percentile

        pooled: dict[str, list[float]] = {}
        for r in runs:
            for k, v in r["endpoints"].items():
                pooled.setdefault(k, []).extend(v["samples_ms"])
        report["baseline_percentiles"] = {
            k: [[q, round(percentile(sorted(v), q), 3)] for q in PERCENTILE_POINTS]
            for k, v in pooled.items() if v
        }
        if comparison.regressions:
            exit_code = exit_code or EXIT_GATE
            print(f"FAIL: regression on {', '.join(comparison.regressions)}")
        else:
            print("PASS: no regression")

    report["exit_code"] = exit_code
    written = []
    try:
        if args.save_baseline:
            _write(args.save_baseline, json.dumps(_baseline_doc([_baseline_run(collector, report)])))
            written.append(f"baseline {args.save_baseline}")
        if args.append_baseline:
            runs_so_far = appended["runs"] if appended else []
            doc = _baseline_doc([*runs_so_far, _baseline_run(collector, report)])
            _write(args.append_baseline, json.dumps(doc))
            count = len(doc["runs"])
            written.append(f"baseline {args.append_baseline} ({count} run{'s' if count != 1 else ''})")
        if args.json:
            _write(args.json, json.dumps(report, indent=1, default=str))
            written.append(f"JSON {args.json}")
        if args.html:
            from otel_perf._export.html_report import render_html

            _write(args.html, render_html(report))
            written.append(f"HTML {args.html}")
    except OSError as exc:
        return _fail(EXIT_INPUT, f"cannot write {exc.filename}: {exc.strerror}")
    if written:
        print("\nwrote " + ", ".join(written))
    print(f"\nrun {run_id}: {collector.total} requests in {elapsed:.1f}s, stopped by {info.stop_reason}; "
          f"find its traces by baggage {headers['baggage'].split(',')[0]}")
    return exit_code


def _write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
