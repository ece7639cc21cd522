"""The plain-text report: per-endpoint table and findings, at exit or in the demo."""

from __future__ import annotations

from typing import Any


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append(
            "  ".join(
                str(c).rjust(w) if i > 0 else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=False))
            )
        )
    return out


def render(stats: dict[str, Any]) -> str:
    """Human-readable report of a :func:`otel_perf._analysis.stats.summary` result."""
    head = f"otel-perf report: service {stats['service']!r}, {stats['window_seconds']:.0f}s window"
    workers = stats.get("workers") or {}
    if workers.get("scope") == "server":
        head += f", {workers.get('count', 1)} worker(s)"
        if workers.get("missing"):
            head += f" ({len(workers['missing'])} did not answer)"
    reasons = list(stats.get("status_reasons", []))
    if stats["status"] == "no_requests":
        lines = [f"{head}: {reasons[0] if reasons else 'no requests recorded'}"]
        reasons = reasons[1:]
    else:
        score = stats.get("score")
        shown = f", score {score}" if score is not None else ""
        lines = [f"{head}, status {stats['status'].upper()}{shown}"]
    lines += [f"  - {r}" for r in reasons]
    rows = []
    for e in stats["endpoints"]:
        budget = e.get("budget")
        level = (budget or {}).get("level") or ("ok" if (budget or {}).get("ok") else "over")
        verdict = "" if not budget else {"ok": "ok", "over": "OVER", "critical": "CRITICAL"}.get(level, level)
        rows.append(
            [
                f"{e['method']} {e['route']}",
                str(e["count"]),
                f"{e['requests_per_minute']:.1f}",
                f"{e['error_rate']:.1%}",
                f"{e.get('client_error_rate', 0.0):.1%}",
                f"{e['p50_ms']:.1f}",
                f"{e['p95_ms']:.1f}",
                f"{e['p99_ms']:.1f}",
                f"{e['mean_queries']:.1f}",
                str(e["slow_count"]),
                verdict,
            ]
        )
    lines.append("")
    if rows:
        lines += _table(
            rows,
            ["endpoint", "count", "rpm", "5xx", "4xx", "p50 ms", "p95 ms", "p99 ms", "queries", "slow",
             "budget"],
        )
    if stats.get("operations"):
        lines += ["", "Operations (measure()):"]
        op_rows = [
            [o["name"], str(o["count"]), f"{o['per_minute']:.1f}", f"{o['error_rate']:.1%}",
             f"{o['p50_ms']:.1f}", f"{o['p95_ms']:.1f}", f"{o['p99_ms']:.1f}"]
            for o in stats["operations"]
        ]
        lines += _table(op_rows, ["operation", "count", "per min", "errors", "p50 ms", "p95 ms", "p99 ms"])
    over_db = [d for d in stats.get("database", []) if (d.get("budget") or {}).get("level", "ok") != "ok"]
    if over_db:
        lines += ["", "Database operations over budget:"]
        for d in over_db:
            for c in d["budget"]["checks"]:
                if c["level"] != "ok":
                    q = c["objective"].removesuffix("_ms")
                    lines.append(f"  {d['operation']} {d['collection']}: {q} {c['measured']:.1f} ms over "
                                 f"{c['limit']:g} ms ({c['level']})")
    f = stats["findings"]
    if f["n_plus_one"]:
        lines += ["", "N+1 findings:"]
        for x in f["n_plus_one"]:
            lines.append(f"  {x['method']} {x['route']}: {x['repeat_count']}x {x['statement']}")
            lines.append(f"    seen {x['occurrences']} time(s), example trace {x['trace_id'] or '-'}")
            lines.append(f"    -> {x['recommendation']}")
    if f["slow_queries"]:
        lines += ["", "Slow queries (most recent first):"]
        for x in f["slow_queries"][:10]:
            lines.append(f"  {x['duration_ms']:.1f} ms {x['statement']}  trace {x['trace_id'] or '-'}")
            lines.append(f"    -> {x['recommendation']}")
    if f["slow_requests"]:
        lines += ["", "Slow requests (most recent first):"]
        for x in f["slow_requests"][:10]:
            lines.append(
                f"  {x['duration_ms']:.1f} ms {x['method']} {x['route']} ({x['query_count']} queries) "
                f"trace {x['trace_id'] or '-'}"
            )
            lines.append(f"    -> {x['recommendation']}")
    if f["event_loop_blocks"]:
        lines += ["", "Event loop blocked:"]
        for x in f["event_loop_blocks"][:10]:
            lines.append(f"  {x['lag_ms']:.0f} ms by {x['method']} {x['route']} trace {x['trace_id'] or '-'}")
            lines.append(f"    -> {x['recommendation']}")
    if stats["outgoing"]:
        lines += ["", "Outgoing APIs:"]
        for o in stats["outgoing"]:
            rl = o.get("ratelimit", {})
            head = (
                f" rate limit {rl.get('remaining', '?'):g}/{rl.get('limit', '?'):g}"
                if ("remaining" in rl and "limit" in rl)
                else ""
            )
            lines.append(
                f"  {o['host']}: {o['count']} calls, p95 {o['p95_ms']:.1f} ms, "
                f"errors {o['error_rate']:.1%}, 429s {o['throttled']}{head}"
            )
    lines += _jobs_lines(stats) + _caches_lines(stats)
    return "\n".join(lines) + "\n"


def _jobs_lines(stats: dict[str, Any]) -> list[str]:
    """The background jobs table (Celery tasks, BackgroundTasks)."""
    jobs = stats.get("jobs") or []
    if not jobs:
        return []
    rows = [
        [
            f"{j['system']} {j['name']}",
            str(j["count"]),
            f"{j['error_rate']:.1%}" + (f" ({j['retries']} retried)" if j.get("retries") else ""),
            f"{j['p50_ms']:.1f}",
            f"{j['p95_ms']:.1f}",
            f"{j['p99_ms']:.1f}",
            f"{j['queue_wait_p95_ms']:.1f}" if "queue_wait_p95_ms" in j else "-",
            f"{j['mean_queries']:.1f}",
        ]
        for j in jobs
    ]
    header = ["job", "runs", "failed", "p50 ms", "p95 ms", "p99 ms", "wait p95 ms", "queries"]
    return ["", "Jobs:", *_table(rows, header)]


def _caches_lines(stats: dict[str, Any]) -> list[str]:
    """One line per cache: hits, misses, hit ratio against its floor."""
    caches = stats.get("caches") or []
    if not caches:
        return []
    lines = ["", "Caches:"]
    for c in caches:
        flag = f"  BELOW the {c['floor']:.0%} floor" if c["below_floor"] else ""
        lines.append(
            f"  {c['system']} {c['name']}: {c['hits']} hits, {c['misses']} misses, "
            f"hit ratio {c['hit_ratio']:.1%}{flag}"
        )
    return lines
