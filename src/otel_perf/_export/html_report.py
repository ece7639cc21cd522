"""The load-test HTML report: one self-contained file with charts, no network needed.

The report's data (the JSON of ``otel-perf loadtest --json``) is embedded in a
``<script type="application/json">`` block; a small inline script draws the charts as SVG:

* latency over time (p50/p95 per endpoint per second, p95 budgets as dashed lines),
* throughput, errors and users over time,
* latency percentiles (0 to 99.9%, on a "nines" axis; the baseline dashed when compared),
* client vs server p95 per endpoint, with the budget marked.

Tables show the per-endpoint numbers, the budget breaches and the regression verdicts.
Every string from the run is inserted with ``textContent`` (never as HTML), the embedded JSON
escapes ``<``, ``>`` and ``&``, and a Content-Security-Policy forbids any fetch.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

__all__ = ["render_html"]


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, default=str, allow_nan=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON; the charts treat None as a gap."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa;
        --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { padding: 20px 28px 12px; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 6px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
main { padding: 0 28px 40px; }
.meta { color: var(--muted); }
.badges { margin-top: 10px; display: flex; gap: 8px; flex-wrap: wrap; }
.badge { border-radius: 12px; padding: 2px 10px; font-weight: 600; font-size: 12px; border: 1px solid; }
.badge.ok { color: var(--ok); border-color: var(--ok); }
.badge.bad { color: var(--bad); border-color: var(--bad); }
.badge.na { color: var(--muted); border-color: var(--line); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
         padding: 10px 12px; }
figcaption { font-weight: 600; margin-bottom: 4px; }
figcaption small { font-weight: 400; color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); }
.legend span::before { content: ""; display: inline-block; width: 14px; height: 3px; margin-right: 5px;
                       vertical-align: middle; background: var(--c); }
.legend span.dash::before {
  background: repeating-linear-gradient(90deg, var(--c) 0 4px, transparent 4px 7px); }
table { border-collapse: collapse; width: 100%; background: var(--bg); }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--panel); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
td.ok { color: var(--ok); }
.note { color: var(--warn); }
code { font-size: 12px; }
.scroll { overflow-x: auto; }
td.trace { font: 11px ui-monospace, monospace; color: var(--muted); }
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#0969da", "#bf3989", "#1a7f37", "#bc4c00", "#8250df", "#0a7b83", "#9a6700", "#cf222e"];
  var keys = data.endpoints.map(function (e) { return e.key; });
  function color(key) {
    var i = keys.indexOf(key);
    return PALETTE[(i < 0 ? keys.length : i) % PALETTE.length];
  }
  function el(tag, attrs, parent) {
    var node = document.createElementNS(NS, tag);
    for (var k in attrs) { if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, s, anchor) {
    var t = el("text", {x: x, y: y, "text-anchor": anchor || "middle"}, parent); t.textContent = s; return t;
  }
  function nice(max) {
    if (!(max > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(max))), m = max / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function fmt(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
  function nines(q) { return -Math.log10(Math.max(1e-4, 1 - q)); }
  function legend(figure, items) {
    var box = document.createElement("div"); box.className = "legend";
    items.forEach(function (it) {
      var s = document.createElement("span"); s.textContent = it.name; s.style.setProperty("--c", it.color);
      if (it.dash) s.className = "dash"; box.appendChild(s);
    });
    figure.appendChild(box);
  }
  // A line chart: series [{name, color, dash, points: [[x, y|null], ...]}], hlines [{y, color, label}].
  function lineChart(id, opts) {
    var fig = document.getElementById(id); if (!fig) return;
    var W = 640, H = 280, L = 52, R = 14, T = 12, B = 36;
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img",
                         "aria-label": fig.querySelector("figcaption").textContent, "data-chart": id});
    fig.appendChild(svg);
    var xs = [], ys = [];
    opts.series.forEach(function (s) { s.points.forEach(function (p) {
      if (p[1] !== null && p[1] !== undefined) { xs.push(p[0]); ys.push(p[1]); } }); });
    (opts.hlines || []).forEach(function (h) { ys.push(h.y); });
    var xMin = opts.xMin !== undefined ? opts.xMin : Math.min.apply(null, xs.concat([0]));
    var xMax = opts.xMax !== undefined ? opts.xMax : Math.max.apply(null, xs.concat([1]));
    if (xMax <= xMin) xMax = xMin + 1;
    var yMax = nice(Math.max.apply(null, ys.concat([0])) * 1.08);
    function X(v) { return L + (v - xMin) / (xMax - xMin) * (W - L - R); }
    function Y(v) { return H - B - v / yMax * (H - T - B); }
    for (var i = 0; i <= 4; i++) {
      var yv = yMax * i / 4;
      el("line", {x1: L, x2: W - R, y1: Y(yv), y2: Y(yv), stroke: "#d0d7de", "stroke-width": 1}, svg);
      text(svg, L - 6, Y(yv) + 4, fmt(yv), "end");
    }
    (opts.xTicks || []).forEach(function (t) {
      el("line", {x1: X(t[0]), x2: X(t[0]), y1: H - B, y2: H - B + 4, stroke: "#8c959f"}, svg);
      text(svg, X(t[0]), H - B + 16, t[1]);
    });
    text(svg, (L + W - R) / 2, H - 4, opts.xLabel);
    var yl = text(svg, 12, (T + H - B) / 2, opts.yLabel);
    yl.setAttribute("transform", "rotate(-90 12 " + (T + H - B) / 2 + ")");
    if (opts.shade && opts.shade[1] > opts.shade[0]) {
      el("rect", {x: X(opts.shade[0]), y: T, width: X(opts.shade[1]) - X(opts.shade[0]), height: H - T - B,
                  fill: "#8c959f", "fill-opacity": 0.12, "class": "warmup"}, svg);
      text(svg, X(opts.shade[1]) - 3, T + 11, "warm-up", "end");
    }
    (opts.hlines || []).forEach(function (h) {
      el("line", {x1: L, x2: W - R, y1: Y(h.y), y2: Y(h.y), stroke: h.color, "stroke-width": 1.2,
                  "stroke-dasharray": "6 4", "class": "budget-line"}, svg);
      text(svg, W - R - 2, Y(h.y) - 3, h.label, "end");
    });
    var count = 0;
    opts.series.forEach(function (s) {
      var d = "", pen = false;
      s.points.forEach(function (p) {
        if (p[1] === null || p[1] === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1); pen = true; count++;
      });
      if (!d) return;
      el("path", {d: d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.8,
                  "stroke-dasharray": s.dash ? "5 4" : null, "class": "series", "data-series": s.name}, svg);
      if (s.markers !== false) {
        s.points.forEach(function (p) {
          if (p[1] === null || p[1] === undefined) return;
          var c = el("circle", {cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 1.8, fill: s.color,
                                "class": "point"}, svg);
          var t = el("title", {}, c);
          t.textContent = s.name + ": " + fmt(p[1]) + " " + opts.unit + " @ " + p[2];
        });
      }
    });
    svg.setAttribute("data-points", String(count));
    legend(fig, opts.series.concat((opts.hlines || []).map(function (h) {
      return {name: h.label, color: h.color, dash: true}; })));
  }
  function barChart(id) {
    var fig = document.getElementById(id); if (!fig) return;
    var rows = data.endpoints.filter(function (e) { return e.client.p95_ms !== null; });
    var W = 640, rowH = 34, L = 290, R = 60, T = 8, H = T + rows.length * rowH + 28;
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img", "data-chart": id,
                         "aria-label": fig.querySelector("figcaption").textContent}, fig);
    var maxV = 0;
    rows.forEach(function (e) {
      maxV = Math.max(maxV, e.client.p95_ms || 0, (e.server && e.server.p95_ms) || 0,
                      budgetOf(e, "p95_ms") || 0);
    });
    maxV = nice(maxV * 1.05);
    function X(v) { return L + v / maxV * (W - L - R); }
    var count = 0;
    rows.forEach(function (e, i) {
      var y = T + i * rowH;
      var label = text(svg, L - 8, y + 18, e.key.length > 44 ? e.key.slice(0, 43) + "\u2026" : e.key, "end");
      var full = el("title", {}, label); full.textContent = e.key;
      var bars = [["client", e.client.p95_ms, color(e.key), 0],
                  ["server", e.server ? e.server.p95_ms : null, "#8c959f", 13]];
      bars.forEach(function (b) {
          if (b[1] === null || b[1] === undefined) return;
          var r = el("rect", {x: L, y: y + 3 + b[3], width: Math.max(1, X(b[1]) - L).toFixed(1), height: 11,
                              fill: b[2], "class": "bar", "data-side": b[0]}, svg);
          var t = el("title", {}, r); t.textContent = e.key + " " + b[0] + " p95 " + fmt(b[1]) + " ms";
          text(svg, X(b[1]) + 4, y + 12 + b[3], fmt(b[1]), "start");
          count++;
        });
      var limit = budgetOf(e, "p95_ms");
      if (limit) {
        el("line", {x1: X(limit), x2: X(limit), y1: y, y2: y + 30, stroke: "#cf222e", "stroke-width": 2,
                    "stroke-dasharray": "3 2", "class": "budget-line"}, svg);
      }
    });
    for (var k = 0; k <= 4; k++) {
      var v = maxV * k / 4; text(svg, X(v), H - 8, fmt(v) + (k === 4 ? " ms" : ""));
    }
    svg.setAttribute("data-points", String(count));
    legend(fig, [{name: "client p95", color: "#0969da"}, {name: "server p95", color: "#8c959f"},
                 {name: "p95 budget", color: "#cf222e", dash: true}]);
  }
  function budgetOf(e, objective) {
    var checks = (data.budgets && data.budgets.checks) || [];
    for (var i = 0; i < checks.length; i++) {
      if (checks[i].key === e.key && checks[i].objective === objective) return checks[i].limit;
    }
    return null;
  }
  var tl = data.timeline, secs = tl.seconds;
  var step = Math.max(1, Math.ceil(secs.length / 10));
  var timeTicks = secs.filter(function (s) { return s % step === 0; })
    .map(function (s) { return [s, s + "s"]; });
  var latencySeries = [], hlines = [];
  keys.forEach(function (k) {
    var s = tl.series[k]; if (!s) return;
    latencySeries.push({name: k + " p95", color: color(k),
                        points: secs.map(function (x, i) { return [x, s.p95_ms[i], x + "s"]; })});
    latencySeries.push({name: k + " p50", color: color(k), dash: true, width: 1.2, markers: false,
                        points: secs.map(function (x, i) { return [x, s.p50_ms[i], x + "s"]; })});
    var b = budgetOf({key: k}, "p95_ms");
    if (b) hlines.push({y: b, color: color(k), label: "p95 budget " + b + " ms"});
  });
  var shade = [0, (data.run && data.run.warmup_s) || 0];
  lineChart("chart-latency", {series: latencySeries, hlines: hlines, xLabel: "seconds since start",
                              yLabel: "latency (ms)", unit: "ms", xTicks: timeTicks, xMin: 0, shade: shade});
  function sumOver(field) {
    return secs.map(function (x, i) {
      var n = 0;
      keys.forEach(function (k) { n += (tl.series[k] ? tl.series[k][field][i] : 0) || 0; });
      return [x, n, x + "s"];
    });
  }
  var total = sumOver("rps"), errors = sumOver("errors");
  lineChart("chart-throughput", {series: [
      {name: "requests/s", color: "#0969da", points: total},
      {name: "errors/s", color: "#cf222e", points: errors},
      {name: "users", color: "#8c959f", dash: true, markers: false,
       points: secs.map(function (x, i) { return [x, tl.users[i], x + "s"]; })}],
    xLabel: "seconds since start", yLabel: "per second / users", unit: "", xTicks: timeTicks, xMin: 0,
    shade: shade});
  var pct = [], base = data.baseline_percentiles || {};
  keys.forEach(function (k) {
    function point(p) { return [nines(p[0]), p[1], "p" + (p[0] * 100).toFixed(1)]; }
    pct.push({name: k, color: color(k), points: (data.percentiles[k] || []).map(point)});
    if (base[k]) {
      pct.push({name: k + " (baseline)", color: color(k), dash: true, markers: false,
                points: base[k].map(point)});
    }
  });
  lineChart("chart-percentiles", {
    series: pct, xLabel: "percentile", yLabel: "latency (ms)", unit: "ms", xMin: 0, xMax: 3,
    xTicks: [[0, "0%"], [nines(0.5), "50%"], [1, "90%"], [nines(0.95), "95%"], [2, "99%"], [3, "99.9%"]]});
  barChart("chart-sides");
  document.body.setAttribute("data-rendered", "true");
})();
"""


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _objective(objective: str, value: Any) -> str:
    if value is None:
        return "–"
    if objective == "error_rate":
        return f"{value:.2%}"
    if objective == "min_rps":
        return f"{value:.1f} req/s"
    return f"{value:.1f} ms"


def _table(header: list[str], rows: list[list[tuple[str, str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{html.escape(text)}</td>' if cls
                         else f"<td>{html.escape(text)}</td>" for text, cls in row) + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _endpoint_rows(report: dict[str, Any]) -> list[list[tuple[str, str]]]:
    failed = {(b["key"], b["objective"]) for b in (report.get("budgets") or {}).get("breaches", [])}
    checked = {(c["key"], c["objective"]) for c in (report.get("budgets") or {}).get("checks", [])}

    def cell(key: str, objective: str, text: str) -> tuple[str, str]:
        if (key, objective) in failed:
            return text, "bad"
        return (text, "ok") if (key, objective) in checked else (text, "")

    rows = []
    for e in report["endpoints"]:
        c, s, k = e["client"], e.get("server") or {}, e["key"]
        rows.append([
            (k, ""), (str(e["requests"]), ""), (_fmt(e["rps"]), ""),
            cell(k, "error_rate", f"{e['error_rate']:.2%}"),
            cell(k, "p50_ms", _fmt(c["p50_ms"])), cell(k, "p95_ms", _fmt(c["p95_ms"])),
            cell(k, "p99_ms", _fmt(c["p99_ms"])), (_fmt(c["max_ms"]), ""),
            (_fmt(s.get("p50_ms")), ""), (_fmt(s.get("p95_ms")), ""), (_fmt(s.get("p99_ms")), ""),
            ((e["slowest"][0]["trace_id"] or "–") if e["slowest"] else "–", "trace"),
        ])
    return rows


def render_html(report: dict[str, Any]) -> str:
    """The HTML report of a load-test result (the dict ``otel-perf loadtest --json`` writes)."""
    data = _clean(report)
    run = data.get("run", {})
    budgets = data.get("budgets")
    regression = data.get("regression")
    badges = []
    if budgets is not None:
        ok = not budgets["breaches"]
        badges.append(("ok" if ok else "bad",
                       "budgets: pass" if ok else f"budgets: {len(budgets['breaches'])} breach(es)"))
    else:
        badges.append(("na", "budgets: not checked"))
    if regression is not None:
        ok = not regression["regressions"]
        badges.append(("ok" if ok else "bad", "regression: none" if ok else
                       f"regression: {', '.join(regression['regressions'])}"))
    else:
        badges.append(("na", "regression: no baseline"))
    totals = data.get("totals", {})
    title = f"Load test {run.get('scenario', '')} – {run.get('id', '')}"
    meta = (f"{run.get('users')} users (spawn {run.get('spawn_rate')}/s) for {_fmt(run.get('duration_s'))} s "
            f"against {run.get('host')} · {totals.get('requests', 0)} requests, "
            f"{_fmt(totals.get('rps'))} req/s, {totals.get('error_rate', 0):.2%} errors · stopped by "
            f"{run.get('stop_reason')} · baggage {run.get('baggage', '')}")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><div class=\"meta\">{html.escape(meta)}</div>",
        '<div class="badges">'
        + "".join(f'<span class="badge {c}">{html.escape(t)}</span>' for c, t in badges)
        + "</div></header><main>",
        '<noscript><p class="note">The charts need JavaScript; the tables below are complete.</p></noscript>',
        '<h2>Charts</h2><div class="grid">',
        '<figure id="chart-latency"><figcaption>Latency over time <small>p95 solid, p50 dashed, per second; '
        "dashed horizontal lines: p95 budgets</small></figcaption></figure>",
        '<figure id="chart-throughput"><figcaption>Throughput, errors and users over time'
        "</figcaption></figure>",
        '<figure id="chart-percentiles"><figcaption>Latency percentiles <small>client side'
        + ("; dashed: baseline" if data.get("baseline_percentiles") else "")
        + "</small></figcaption></figure>",
        '<figure id="chart-sides"><figcaption>p95 client vs server <small>the gap is network, queueing and '
        "client time</small></figcaption></figure>",
        "</div>",
        "<h2>Endpoints</h2>",
        _table(["endpoint", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms",
                "server p50", "server p95", "server p99", "slowest trace"], _endpoint_rows(data)),
    ]
    if budgets is not None:
        source, side = html.escape(str(budgets.get("source", ""))), html.escape(str(budgets.get("side", "")))
        parts.append(f'<h2>Budgets <small class="meta">{source}, latency on the {side} side</small></h2>')
        if budgets["breaches"]:
            parts.append(_table(
                ["route", "tier", "objective", "budget", "measured", "side"],
                [[(b["key"], ""), (b["tier"], ""), (b["objective"], ""),
                  (_objective(b["objective"], b["limit"]), ""),
                  (_objective(b["objective"], b["measured"]), "bad"), (b["side"], "")]
                 for b in budgets["breaches"]]))
        else:
            parts.append(f"<p>All {len(budgets['checks'])} checks passed.</p>")
        for u in budgets.get("unexercised", []):
            hint = f" (did you mean {u['did_you_mean']}?)" if u.get("did_you_mean") else ""
            parts.append(f'<p class="note">Budget route {html.escape(u["key"] + hint)} got no requests.</p>')
    if regression is not None:
        base = regression.get("baseline", {})
        parts.append(f"<h2>Regression <small class=\"meta\">vs {html.escape(str(base.get('path', '')))}; "
                     f"{html.escape(regression['method'])}</small></h2>")
        rows = []
        for c in regression["latency"]:
            cls = {"regression": "bad", "improvement": "ok"}.get(c["verdict"], "")
            shift = "–" if c["shift_ms"] is None else (
                f"{c['shift_ms']:+.2f} ms [{_fmt(c['shift_low_ms'], 2)}, {_fmt(c['shift_high_ms'], 2)}]")
            rows.append([(c["key"], ""), (c["verdict"], cls), (_fmt(c["baseline_p50_ms"]), ""),
                         (_fmt(c["current_p50_ms"]), ""), (_fmt(c.get("run_limit_ms")), ""),
                         (_fmt(c["baseline_p95_ms"]), ""), (_fmt(c["current_p95_ms"]), ""), (shift, ""),
                         (_fmt(c["cliffs_delta"], 2), ""),
                         ("–" if c["p_adjusted"] is None else f"{c['p_adjusted']:.2g}", "")])
        parts.append(_table(["endpoint", "verdict", "base p50", "p50", "same-build p50 ≤", "base p95", "p95",
                             "shift (95% CI)", "Cliff's δ", "adj. p"], rows))
        parts.append(f"<p class=\"meta\">{html.escape(str(base.get('runs', 1)))} baseline run(s). "
                     "“same-build p50 ≤”: the highest median a run of the baseline build is expected to "
                     "show (95% prediction bound from the baseline runs; needs two or more).</p>")
        if regression.get("warning"):
            parts.append(f"<p class=\"note\">{html.escape(regression['warning'])}</p>")
    for note in data.get("notes", []):
        parts.append(f"<p class=\"note\">{html.escape(str(note))}</p>")
    parts += [
        f'<script type="application/json" id="report-data">{_json_for_script(data)}</script>',
        f"<script>{_JS}</script>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
