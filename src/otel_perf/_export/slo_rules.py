"""Prometheus SLO rules generated from a budgets file, and the promtool tests that prove them.

Every budget becomes one or more SLOs (service level objectives) per route:

* **latency** (one per ``p95_ms`` / ``p99_ms``): the share of requests slower than the budget
  bound must stay under ``1 - quantile`` (5% for p95, 1% for p99).  "Slower than the bound"
  is exact because the app adds every budget bound to its histogram buckets, so the SLI is
  ``1 - rate(bucket{le="<bound>"}) / rate(count)``.  ``p50_ms`` is not alerted on: with half of
  the requests allowed to be slower, no burn-rate factor above 2 means anything; load tests
  and the stats endpoint still check it.
* **errors** (``availability``, else ``1 - error_rate``): the share of 5xx responses.

Each SLO gets the multi-window, multi-burn-rate alerts of the Google SRE workbook (chapter 5,
"Alerting on SLOs"), in the shape Sloth and Pyrra generate, for a 30-day SLO window:

=========  ===========  ============  ===========  ========
severity   long window  short window  burn rate    budget spent when it fires
=========  ===========  ============  ===========  ========
page       1h           5m            14.4         2%
page       6h           30m           6            5%
ticket     1d           2h            3            10%
ticket     3d           6h            1            10%
=========  ===========  ============  ===========  ========

plus ``PerfThroughputBelowFloor`` (``min_rps``) and ``PerfBudgetBucketMissing`` (the app
runs without the budgets file, so the latency SLI has no bucket at the bound).  Routes
without an entry are covered by "default" SLOs built from the file's ``defaults``.

:func:`promtool_tests` writes ``promtool test rules`` cases from a small traffic model:
for each SLO a fast burn pages (and the page clears soon after recovery while the ticket
stays), a slow burn tickets without paging, and healthy traffic within budget stays silent.
Expected alerts are computed from the model for every rule, not only the targeted one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from otel_perf._analysis.budgets import Budgets, RouteBudget

__all__ = [
    "BURN_WINDOWS",
    "SLO",
    "build_slos",
    "le_regex",
    "promtool_tests",
    "render_yaml",
    "rule_groups",
]

DURATION = "http_server_request_duration_seconds"
BY = "job, http_route, http_request_method"
SLO_WINDOW_DAYS = 30
#: (severity, long window, short window, burn-rate factor), SRE workbook table 5-8.
BURN_WINDOWS: tuple[tuple[str, str, str, float], ...] = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
_MINUTES = {"5m": 5, "30m": 30, "1h": 60, "2h": 120, "6h": 360, "1d": 1440, "3d": 4320}
ALERT_LATENCY = "PerfLatencyBudgetBurn"
ALERT_ERRORS = "PerfErrorBudgetBurn"
ALERT_FLOOR = "PerfThroughputBelowFloor"
ALERT_BUCKET = "PerfBudgetBucketMissing"
#: Minutes the floor and bucket alerts must hold before firing.
FLOOR_FOR_MIN = 15
BUCKET_FOR_MIN = 15


@dataclass(frozen=True)
class SLO:
    """One objective on one route (or on the routes the defaults cover)."""

    id: str
    kind: Literal["latency", "errors"]
    objective: float
    tier: str
    source: str
    #: Label matchers selecting the route's series (without job); empty for "everything".
    matchers: tuple[str, ...]
    method: str | None = None
    route: str | None = None
    quantile: str | None = None
    bound_s: float | None = None
    #: Routes of a default SLO's method group that it excludes (listed routes).
    excluded: tuple[str, ...] = ()
    #: The HTTP methods a default SLO covers (None: any method not listed elsewhere).
    methods: tuple[str, ...] | None = None

    @property
    def budget(self) -> float:
        """The error budget: share of bad events allowed."""
        return 1.0 - self.objective

    @property
    def what(self) -> str:
        """Human description of the objective."""
        if self.kind == "latency":
            assert self.bound_s is not None
            return (f"{_pct(self.objective)} of requests faster than {_ms(self.bound_s * 1000)} "
                    f"({self.quantile} budget)")
        return f"{_pct(self.objective)} of requests without a 5xx error"


def _pct(x: float) -> str:
    return f"{x * 100:.10g}%"


def _ms(ms: float) -> str:
    return f"{ms:g} ms"


def _num(x: float) -> str:
    """A number in PromQL/YAML: shortest exact form, no float noise (0.0144, not 0.014400000000000001)."""
    return f"{x:.12g}"


def le_label(seconds: float) -> str:
    """The ``le`` value our exporter writes for a bound (``1``, ``0.15``)."""
    if float(seconds).is_integer() and abs(seconds) < 1e15:
        return str(int(seconds))
    return repr(float(seconds))


def le_regex(seconds: float) -> str:
    """RE2 matching the ``le`` label of ``seconds`` as any exporter writes it.

    Our exporter and the Collector write ``1`` and ``0.15``; Prometheus 3 normalises classic
    histogram bounds to ``1.0`` on ingestion.  Both spellings are accepted.
    """
    text = le_label(seconds)
    forms = [text]
    if "." not in text and "e" not in text:
        forms.append(text + ".0")
    return "|".join(re.escape(f).replace("\\", "\\\\") for f in forms)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_alternation(values: Iterable[str]) -> str:
    # PromQL regexes are RE2 in a double-quoted string: escape for RE2, then for the string.
    return "|".join(re.escape(v) for v in values).replace("\\", "\\\\").replace('"', '\\"')


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "root"


def _route_slos(method: str, route: str, budget: RouteBudget, source: str) -> list[SLO]:
    base = f"{method.lower()}-{_slug(route)}"
    matchers = (f"http_request_method={_quote(method)}", f"http_route={_quote(route)}")
    return _slos_for(base, budget, source, matchers, method=method, route=route)


def _slos_for(base: str, budget: RouteBudget, source: str, matchers: tuple[str, ...],
              **where: Any) -> list[SLO]:
    out: list[SLO] = []
    for q, ms in budget.latency_ms().items():
        if q == "p50":
            continue
        objective = {"p95": 0.95, "p99": 0.99}[q]
        out.append(SLO(id=f"{base}-latency-{q}", kind="latency", objective=objective, tier=budget.tier,
                       source=source, matchers=matchers, quantile=q, bound_s=ms / 1000.0, **where))
    target = budget.availability_target()
    if target is not None and target < 1.0:
        out.append(SLO(id=f"{base}-errors", kind="errors", objective=target, tier=budget.tier, source=source,
                       matchers=matchers, **where))
    return out


def build_slos(budgets: Budgets) -> list[SLO]:
    """Every SLO the budgets define: listed routes first, then the defaults for unlisted routes."""
    source = os.path.basename(budgets.source)
    slos: list[SLO] = []
    listed: dict[str, list[str]] = {}
    for method, route, budget in budgets.routes():
        slos += _route_slos(method, route, budget, source)
        listed.setdefault(method, []).append(route)
    if budgets.defaults.has_objective():
        if not listed:
            slos += _slos_for("default", budgets.defaults, source, ('http_route!=""',))
        else:
            for method, routes in listed.items():
                matchers = (f"http_request_method={_quote(method)}", 'http_route!=""',
                            f'http_route!~"{_regex_alternation(routes)}"')
                slos += _slos_for(f"default-{method.lower()}", budgets.defaults, source, matchers,
                                  method=method, excluded=tuple(routes), methods=(method,))
            others = f'http_request_method!~"{_regex_alternation(listed)}"'
            slos += _slos_for("default-other-methods", budgets.defaults, source,
                              (others, 'http_route!=""'), methods=None, excluded=tuple(listed))
    return slos


def _selector(slo_matchers: Sequence[str], job: str | None, extra: Sequence[str] = ()) -> str:
    parts = ([f"job={_quote(job)}"] if job else []) + list(slo_matchers) + list(extra)
    return "{" + ", ".join(parts) + "}"


def _sli_expr(slo: SLO, job: str | None, window: str) -> str:
    total = f"sum by ({BY}) (rate({DURATION}_count{_selector(slo.matchers, job)}[{window}]))"
    if slo.kind == "errors":
        bad_sel = _selector(slo.matchers, job, ['http_response_status_code=~"5.."'])
        bad = f"sum by ({BY}) (rate({DURATION}_count{bad_sel}[{window}]))"
        return f"(\n  {bad}\n)\n/\n(\n  {total}\n)"
    assert slo.bound_s is not None
    good_sel = _selector(slo.matchers, job, [f'le=~"{le_regex(slo.bound_s)}"'])
    good = f"sum by ({BY}) (rate({DURATION}_bucket{good_sel}[{window}]))"
    return f"1 - (\n  (\n    {good}\n  )\n  /\n  (\n    {total}\n  )\n)"


def _labels(slo: SLO) -> dict[str, str]:
    return {"slo": slo.id, "slo_kind": slo.kind, "slo_tier": slo.tier}


def _summary(slo: SLO, severity: str) -> str:
    speed = "fast" if severity == "page" else "steadily"
    what = f"{slo.quantile} latency" if slo.kind == "latency" else "error"
    return (f"{{{{ $labels.http_request_method }}}} {{{{ $labels.http_route }}}} on {{{{ $labels.job }}}} "
            f"is burning its {what} budget {speed}")


def _description(slo: SLO, severity: str) -> str:
    pairs = [(long, short, factor) for sev, long, short, factor in BURN_WINDOWS if sev == severity]
    windows = " or ".join(f"{factor:g}x over {long} and {short}" for long, short, factor in pairs)
    spent = ("2% of the 30-day error budget in an hour" if severity == "page"
             else "10% of it in a day or three")
    return (f"Objective: {slo.what}, tier {slo.tier}, from {slo.source} (SLO {slo.id}). "
            f"Error budget burn rate is at least {windows}: at this pace it spends {spent}.")


def _burn_alert(slo: SLO, severity: str) -> dict[str, Any] | None:
    terms = []
    for sev, long, short, factor in BURN_WINDOWS:
        if sev != severity:
            continue
        threshold = factor * slo.budget
        if threshold >= 1.0:
            continue  # the ratio can never exceed it: this pair cannot fire
        sel = f'{{slo="{slo.id}"}}'
        terms.append(f"(\n  slo:sli_error:ratio_rate{short}{sel} > {_num(threshold)}\n"
                     f"  and\n  slo:sli_error:ratio_rate{long}{sel} > {_num(threshold)}\n)")
    if not terms:
        return None
    return {
        "alert": ALERT_LATENCY if slo.kind == "latency" else ALERT_ERRORS,
        "expr": "\nor\n".join(terms),
        "labels": {"severity": severity, "slo": slo.id, "slo_kind": slo.kind, "slo_tier": slo.tier},
        "annotations": {"summary": _summary(slo, severity), "description": _description(slo, severity)},
    }


def _meta_rules(slo: SLO) -> list[dict[str, Any]]:
    labels = _labels(slo)
    if slo.route is not None:
        labels |= {"http_route": slo.route}
    if slo.method is not None:
        labels |= {"http_request_method": slo.method}
    rules = [
        {"record": "slo:objective:ratio", "expr": f"vector({_num(slo.objective)})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({_num(slo.budget)})", "labels": labels},
    ]
    if slo.bound_s is not None:
        rules.append({"record": "slo:latency_bound:seconds", "expr": f"vector({_num(slo.bound_s)})",
                      "labels": labels})
    return rules


def _floor_alerts(budgets: Budgets, job: str | None) -> list[dict[str, Any]]:
    out = []
    for method, route, budget in budgets.routes():
        if not budget.min_rps:
            continue
        sel = _selector((f"http_request_method={_quote(method)}", f"http_route={_quote(route)}"), job)
        out.append({
            "alert": ALERT_FLOOR,
            "expr": f"sum by ({BY}) (rate({DURATION}_count{sel}[10m])) < {_num(budget.min_rps)}",
            "for": f"{FLOOR_FOR_MIN}m",
            "labels": {"severity": "ticket", "slo_tier": budget.tier},
            "annotations": {
                "summary": "{{ $labels.http_request_method }} {{ $labels.http_route }} on {{ $labels.job }} "
                           "serves less traffic than its floor",
                "description": f"Throughput has been under the floor of {budget.min_rps:g} requests/s from "
                               f"{os.path.basename(budgets.source)} for {FLOOR_FOR_MIN} minutes. Check "
                               "upstream callers, load balancers and recent deploys.",
            },
        })
    return out


def _bucket_alert(slo: SLO, job: str | None) -> dict[str, Any]:
    assert slo.bound_s is not None
    total = f"sum by ({BY}) (rate({DURATION}_count{_selector(slo.matchers, job)}[10m])) > 0"
    good_sel = _selector(slo.matchers, job, [f'le=~"{le_regex(slo.bound_s)}"'])
    good = f"sum by ({BY}) (rate({DURATION}_bucket{good_sel}[10m]))"
    return {
        "alert": ALERT_BUCKET,
        "expr": f"{total}\nunless on ({BY})\n{good}",
        "for": f"{BUCKET_FOR_MIN}m",
        "labels": {"severity": "ticket", "slo": slo.id, "slo_kind": slo.kind, "slo_tier": slo.tier},
        "annotations": {
            "summary": "{{ $labels.job }} has no histogram bucket at the latency budget of "
                       "{{ $labels.http_request_method }} {{ $labels.http_route }}",
            "description": f"No le=\"{le_label(slo.bound_s)}\" bucket, so SLO {slo.id} cannot be measured. "
                           f"Start the app with OTEL_PERF_BUDGETS pointing at {slo.source} (it adds the "
                           "budget bounds to the request-duration histogram).",
        },
    }


def rule_groups(budgets: Budgets, job: str | None = None) -> dict[str, Any]:
    from otel_perf._export import page_rules  # imports this module
    """The rules file as a dict (``{"groups": [...]}``); ``job`` defaults to the file's ``service``."""
    job = job if job is not None else budgets.service
    slos = build_slos(budgets)
    sli: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for slo in slos:
        for window in WINDOWS:
            sli.append({"record": f"slo:sli_error:ratio_rate{window}", "expr": _sli_expr(slo, job, window),
                        "labels": _labels(slo)})
        meta += _meta_rules(slo)
        for severity in ("page", "ticket"):
            alert = _burn_alert(slo, severity)
            if alert is not None:
                alerts.append(alert)
        if slo.kind == "latency":
            alerts.append(_bucket_alert(slo, job))
    alerts += _floor_alerts(budgets, job)
    groups = [
        {"name": "otel-perf-slo-sli", "rules": sli},
        {"name": "otel-perf-slo-meta", "rules": meta},
        {"name": "otel-perf-slo-alerts", "rules": alerts},
    ]
    pages = page_rules.page_rule_group(budgets, job)  # browser page-load objectives (issue #22)
    if pages is not None:
        groups.append(pages)
    return {"groups": [g for g in groups if g["rules"]]}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL stays readable), no key sorting, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def render_yaml(data: dict[str, Any], header: str = "") -> str:
    """YAML text of ``data`` with an optional ``#`` comment header."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return "\n".join([*lines, body]) if lines else body


# --- promtool tests ------------------------------------------------------------------------
#
# Traffic model: per route a list of segments (minutes, requests/min, per-bound slow share,
# error share).  Counters are the running sums; the expected alerts are evaluated from the
# same model with exact window ratios, and every comparison must clear its threshold by a
# margin so Prometheus' rate() extrapolation cannot flip it.

_RATE = 1000.0  # requests per minute in the model
_MARGIN = 1.25
#: Sample spacing and rule evaluation interval of the tests, in minutes.  Coarser than a real
#: Prometheus (keeps `promtool test rules` fast) but fine enough for the 5m short window.
_SAMPLE_MIN = 2
_EVAL_MIN = 5


@dataclass
class _Segment:
    minutes: int
    rate: float  # requests per minute
    slow: dict[float, float]  # bound -> share of requests slower than it
    errors: float  # share of 5xx


@dataclass
class _Traffic:
    method: str
    route: str
    bounds: list[float]
    segments: list[_Segment]
    buckets: bool = True

    def cumulative(self, minute: float, what: Any) -> float:
        total = 0.0
        start = 0
        for seg in self.segments:
            if minute <= start:
                break
            span = min(minute, start + seg.minutes) - start
            total += span * seg.rate * what(seg)
            start += seg.minutes
        return total

    def length(self) -> int:
        return sum(s.minutes for s in self.segments)


@dataclass
class _Case:
    name: str
    traffic: list[_Traffic]
    evals: list[int]  # minutes
    notes: list[str] = field(default_factory=list)


def _matches(slo: SLO, method: str, route: str) -> bool:
    if slo.route is not None:
        return slo.method == method and slo.route == route
    if slo.methods is None:
        return method not in slo.excluded
    return method in slo.methods and route not in slo.excluded


def _series_text(values: list[float]) -> str:
    """promtool's expanding notation for a counter that changes slope at segment starts."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        step = values[i + 1] - values[i] if i + 1 < len(values) else 0.0
        while j + 1 < len(values) and math.isclose(values[j + 1] - values[j], step, rel_tol=1e-9,
                                                   abs_tol=1e-9):
            j += 1
        count = j - i
        parts.append(f"{_num(values[i])}+{_num(step)}x{count}" if count else _num(values[i]))
        i = j + 1
    return " ".join(parts)


def _input_series(t: _Traffic, job: str) -> list[dict[str, str]]:
    minutes = t.length()
    base = f'job="{job}", http_route={_quote(t.route)}, http_request_method={_quote(t.method)}'
    out = []
    for status in ("200", "500"):
        def share(seg: _Segment, status: str = status) -> float:
            return seg.errors if status == "500" else 1.0 - seg.errors

        labels = base + f', http_response_status_code="{status}"'
        if status == "500":
            labels += ', error_type="500"'
        counts = [t.cumulative(m, share) for m in range(0, minutes + 1, _SAMPLE_MIN)]
        out.append({"series": f"{DURATION}_count{{{labels}}}", "values": _series_text(counts)})
        if not t.buckets:
            continue
        for bound in [*t.bounds, math.inf]:
            def under(seg: _Segment, bound: float = bound, share: Any = share) -> float:
                fast = 1.0 if bound == math.inf else 1.0 - seg.slow.get(bound, 0.0)
                return float(fast * share(seg))

            le = "+Inf" if bound == math.inf else le_label(bound)
            values = [t.cumulative(m, under) for m in range(0, minutes + 1, _SAMPLE_MIN)]
            out.append({"series": f'{DURATION}_bucket{{{labels}, le="{le}"}}',
                        "values": _series_text(values)})
    return out


def _ratio(t: _Traffic, slo: SLO, end: int, window: int) -> float | None:
    start = max(0, end - window)
    total = t.cumulative(end, lambda s: 1.0) - t.cumulative(start, lambda s: 1.0)
    if total <= 0:
        return None
    if slo.kind == "errors":
        bad = t.cumulative(end, lambda s: s.errors) - t.cumulative(start, lambda s: s.errors)
    else:
        assert slo.bound_s is not None
        bound = slo.bound_s
        bad = (t.cumulative(end, lambda s: s.slow.get(bound, 0.0))
               - t.cumulative(start, lambda s: s.slow.get(bound, 0.0)))
    return bad / total


def _above(value: float | None, threshold: float, where: str) -> bool:
    if value is None:
        return False
    if threshold / _MARGIN < value < threshold * _MARGIN:
        raise AssertionError(f"test model too close to a threshold: {where}: {value:.6g} vs {threshold:.6g}")
    return value > threshold


def _expected_burn(case: _Case, slos: list[SLO], minute: int, severity: str, kind: str,
                   job: str) -> list[dict[str, Any]]:
    out = []
    for slo in slos:
        if slo.kind != kind:
            continue
        alert = _burn_alert(slo, severity)
        if alert is None:
            continue
        for t in case.traffic:
            if not _matches(slo, t.method, t.route) or (kind == "latency" and not t.buckets):
                continue
            fires = False
            for sev, long, short, factor in BURN_WINDOWS:
                threshold = factor * slo.budget
                if sev != severity or threshold >= 1.0:
                    continue
                where = f"{case.name} @{minute}m {slo.id} {long}/{short}"
                a = _above(_ratio(t, slo, minute, _MINUTES[short]), threshold, where + " short")
                b = _above(_ratio(t, slo, minute, _MINUTES[long]), threshold, where + " long")
                fires = fires or (a and b)
            if fires:
                out.append(_alert_expectation(alert, t, job))
    return out


def _alert_expectation(alert: dict[str, Any], t: _Traffic, job: str) -> dict[str, Any]:
    labels = {"job": job, "http_route": t.route, "http_request_method": t.method, **alert["labels"]}
    values = {"job": job, "http_route": t.route, "http_request_method": t.method}

    def render(template: str) -> str:
        for key, value in values.items():
            template = template.replace(f"{{{{ $labels.{key} }}}}", value)
        return template

    return {"exp_labels": labels,
            "exp_annotations": {k: render(v) for k, v in alert["annotations"].items()}}


def _expected_floor(case: _Case, budgets: Budgets, minute: int, job: str) -> list[dict[str, Any]]:
    out = []
    for alert, (method, route, budget) in zip(_floor_alerts(budgets, None),
                                              [r for r in budgets.routes() if r[2].min_rps], strict=True):
        assert budget.min_rps is not None
        for t in case.traffic:
            if (t.method, t.route) != (method, route):
                continue
            # Every segment runs at a constant rate; the 10m rate is that rate after a minute.
            low = [_above(budget.min_rps, seg.rate / 60.0, f"{case.name} floor") for seg in t.segments]
            if all(low) and minute > FLOOR_FOR_MIN + 2:
                out.append(_alert_expectation(alert, t, job))
    return out


def _expected_bucket(case: _Case, slos: list[SLO], minute: int, job: str) -> list[dict[str, Any]]:
    out = []
    for slo in slos:
        if slo.kind != "latency":
            continue
        for t in case.traffic:
            if _matches(slo, t.method, t.route) and not t.buckets and minute > BUCKET_FOR_MIN + 2:
                out.append(_alert_expectation(_bucket_alert(slo, None), t, job))
    return out


def _healthy_segment(bounds: list[float], slos: list[SLO], rate: float, scale: float = 0.25) -> _Segment:
    slow: dict[float, float] = {}
    for bound in bounds:
        budgets = [s.budget for s in slos if s.kind == "latency" and s.bound_s == bound]
        slow[bound] = scale * min(budgets) if budgets else 0.0
    # Monotone: a request slower than a higher bound is slower than every lower one.
    running = 0.0
    for bound in sorted(bounds, reverse=True):
        running = max(running, slow[bound])
        slow[bound] = running
    errors = [s.budget for s in slos if s.kind == "errors"]
    return _Segment(0, rate, slow, scale * min(errors) if errors else 0.0)


def _burning(healthy: _Segment, slo: SLO, share: float, minutes: int) -> _Segment:
    seg = _Segment(minutes, healthy.rate, dict(healthy.slow), healthy.errors)
    if slo.kind == "errors":
        seg.errors = share
    else:
        assert slo.bound_s is not None
        for bound in seg.slow:
            if bound <= slo.bound_s:
                seg.slow[bound] = max(seg.slow[bound], share)
    return seg


def _cases(budgets: Budgets, slos: list[SLO]) -> list[_Case]:
    """Scenario groups; every group drives all routes at once (routes are independent series)."""
    targets: list[tuple[str, str]] = [(m, r) for m, r, _ in budgets.routes()]
    if budgets.defaults.has_objective():
        methods = sorted({m for m, _ in targets})
        targets.append((methods[0] if methods else "GET", "/otel-perf-test/unlisted"))
        if methods and "DELETE" not in methods:
            targets.append(("DELETE", "/otel-perf-test/unlisted"))

    @dataclass
    class _Target:
        method: str
        route: str
        slos: list[SLO]
        bounds: list[float]
        rate: float
        floor: float
        healthy: _Segment

    plans = []
    for method, route in targets:
        route_slos = [s for s in slos if _matches(s, method, route)]
        budget = budgets.lookup(method, route)
        bounds = sorted({s.bound_s for s in route_slos if s.bound_s is not None} |
                        {ms / 1000.0 for ms in (budget.latency_ms().values() if budget else [])})
        floor = (budget.min_rps or 0.0) if budget else 0.0
        rate = max(_RATE, floor * 60 * 4)
        plans.append(_Target(method, route, route_slos, bounds, rate, floor,
                             _healthy_segment(bounds, route_slos, rate)))

    def steady(p: _Target, minutes: int) -> _Segment:
        return _Segment(minutes, p.rate, dict(p.healthy.slow), p.healthy.errors)

    def case(name: str, evals: list[int], segments: Any, buckets: bool = True) -> _Case:
        traffic = [_Traffic(p.method, p.route, p.bounds, segments(p), buckets) for p in plans]
        return _Case(name, traffic, evals)

    cases: list[_Case] = [case("healthy traffic within budget stays silent", [30, 360],
                                      lambda p: [steady(p, 360)])]
    kinds = sorted({(s.kind, s.quantile or "") for s in slos})
    for kind, quantile in kinds:
        label = f"{quantile} latency" if kind == "latency" else "error"

        def pick(p: _Target, kind: str = kind, quantile: str = quantile) -> SLO | None:
            return next((s for s in p.slos if s.kind == kind and (s.quantile or "") == quantile), None)

        def fast(p: _Target, pick: Any = pick) -> list[_Segment]:
            slo = pick(p)
            share = min(1.0, 20 * slo.budget) if slo else 0.0
            if slo is None or not (6 * slo.budget < 1.0 and share > 6 * slo.budget * _MARGIN):
                return [steady(p, 360)]
            return [_burning(p.healthy, slo, share, 60), steady(p, 300)]

        def slow(p: _Target, pick: Any = pick) -> list[_Segment]:
            slo = pick(p)
            if slo is None or 2 * slo.budget >= 1.0:
                return [steady(p, 360)]
            return [_burning(p.healthy, slo, 2 * slo.budget, 360)]

        cases.append(case(f"fast burn of the {label} budget pages; the page clears after recovery, "
                          "the ticket stays", [30, 120], fast))
        cases.append(case(f"slow burn of the {label} budget opens a ticket and does not page", [360], slow))
    if any(p.floor for p in plans):
        cases.append(case("throughput under the min_rps floor opens a ticket", [60],
                          lambda p: [_Segment(90, p.floor * 60 * 0.4 if p.floor else p.rate,
                                              dict(p.healthy.slow), p.healthy.errors)]))
    if any(s.kind == "latency" for s in slos):
        cases.append(case("an app without the budget buckets (OTEL_PERF_BUDGETS unset) is reported", [40],
                          lambda p: [steady(p, 60)], buckets=False))
    return cases


def promtool_tests(budgets: Budgets, rules_file: str, job: str | None = None) -> dict[str, Any]:
    """A ``promtool test rules`` file for the rules of ``budgets`` stored at ``rules_file``."""
    from otel_perf._export import page_rules  # imports this module
    job_name = job if job is not None else (budgets.service or "demo")
    slos = build_slos(budgets)
    alert_names = [ALERT_LATENCY, ALERT_ERRORS, ALERT_BUCKET]
    if any(b.min_rps for _, _, b in budgets.routes()):
        alert_names.append(ALERT_FLOOR)
    tests = []
    for case in _cases(budgets, slos):
        checks = []
        for minute in case.evals:
            for name in alert_names:
                if name == ALERT_BUCKET:
                    expected = _expected_bucket(case, slos, minute, job_name)
                elif name == ALERT_FLOOR:
                    expected = _expected_floor(case, budgets, minute, job_name)
                else:
                    kind = "latency" if name == ALERT_LATENCY else "errors"
                    expected = (_expected_burn(case, slos, minute, "page", kind, job_name) +
                                _expected_burn(case, slos, minute, "ticket", kind, job_name))
                checks.append({"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected})
        series = [s for t in case.traffic for s in _input_series(t, job_name)]
        tests.append({"name": case.name, "interval": f"{_SAMPLE_MIN}m", "input_series": series,
                      "alert_rule_test": checks})
    tests += page_rules.page_promtool_tests(budgets, job)  # browser page-load objectives (issue #22)
    return {"rule_files": [rules_file], "evaluation_interval": f"{_EVAL_MIN}m", "tests": tests}
