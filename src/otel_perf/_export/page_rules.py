"""Prometheus alerts for the page-load objectives of a budgets file, and their promtool tests.

A page objective (``lcp_ms``, ``inp_ms``, ``cls``, ``fcp_ms``, ``ttfb_ms`` under ``pages`` or
``page_defaults``) holds at the 75th percentile of page loads, the Web Vitals convention: at
least 75% of a page's loads must be within the budget.  The browser script adds every budget to
its histogram bounds (the server hands them over in the script's prologue), so the share is
exact: ``rate(bucket{le="<budget>"}) / rate(count)`` over 30 minutes.  The alert
``PerfPageVitalOverBudget`` (severity ``ticket``) fires when that share stays under 75% for 15
minutes while the page had at least ``MIN_PAGE_LOADS`` loads in the window (a handful of slow
visits to a quiet page is noise, not a regression).  Pages without an entry are covered by the
``page_defaults`` objectives.

:func:`page_promtool_tests` writes, for each objective, a case where too few loads are within
budget (fires, with the exact labels and annotations), a healthy case (silent) and a case with
too few loads (silent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otel_perf import _names as n
from otel_perf._analysis.budgets import Budgets
from otel_perf._export.slo_rules import _quote, _regex_alternation, le_label, le_regex

ALERT_PAGE = "PerfPageVitalOverBudget"
#: The Web Vitals percentile: a page meets a budget when 75% of its loads do.
QUANTILE = 0.75
WINDOW = "30m"
FOR = "15m"
#: Fewer page loads than this in the window never alert.
MIN_PAGE_LOADS = 20
#: vital -> (Prometheus histogram name, label shown in messages).
VITALS: dict[str, tuple[str, str]] = {
    "lcp": (n.PROM_BROWSER_LCP, "LCP"),
    "inp": (n.PROM_BROWSER_INP, "INP"),
    "cls": (n.PROM_BROWSER_CLS, "CLS"),
    "fcp": (n.PROM_BROWSER_FCP, "FCP"),
    "ttfb": (n.PROM_BROWSER_TTFB, "TTFB"),
}
_BY = "job, http_route"
_UNLISTED_EXAMPLE = "/a-page-without-its-own-budget"


@dataclass(frozen=True)
class PageObjective:
    """One alerting objective: a vital's bound for one page, or for every unlisted page."""

    vital: str
    bound: float  # seconds, or the CLS score
    route: str  # "" for the page_defaults objective
    listed: tuple[str, ...]  # pages with their own entry (excluded from the default objective)

    def shown(self) -> str:
        if self.vital == "cls":
            return f"{self.bound:g}"
        return f"{self.bound * 1000:g} ms"

    def matchers(self, job: str | None) -> list[str]:
        out = [f"job={_quote(job)}"] if job else []
        if self.route:
            out.append(f"http_route={_quote(self.route)}")
        elif self.listed:
            out.append(f'http_route!~"{_regex_alternation(self.listed)}"')
        return out


def page_objectives(budgets: Budgets) -> list[PageObjective]:
    """Every page objective to alert on, listed pages first, then the defaults."""
    listed = tuple(budgets.pages)
    out = [
        PageObjective(vital, bound, route, listed)
        for route, budget in budgets.pages.items()
        for vital, bound in budget.objectives().items()
    ]
    out += [PageObjective(v, b, "", listed) for v, b in budgets.page_defaults.objectives().items()]
    return out


def _expr(objective: PageObjective, job: str | None) -> str:
    metric = VITALS[objective.vital][0]
    selector = ", ".join(objective.matchers(job))
    within = ", ".join([*objective.matchers(job), f'le=~"{le_regex(objective.bound)}"'])
    return (
        f"(\n  sum by ({_BY}) (rate({metric}_bucket{{{within}}}[{WINDOW}]))\n"
        f"/\n  sum by ({_BY}) (rate({metric}_count{{{selector}}}[{WINDOW}]))\n) < {QUANTILE:g}\n"
        f"and on ({_BY})\n"
        f"  sum by ({_BY}) (increase({metric}_count{{{selector}}}[{WINDOW}])) >= {MIN_PAGE_LOADS}"
    )


def _alert(objective: PageObjective, job: str | None, source: str) -> dict[str, Any]:
    label = VITALS[objective.vital][1]
    scope = f"page {objective.route}" if objective.route else "every page without its own entry"
    return {
        "alert": ALERT_PAGE,
        "expr": _expr(objective, job),
        "for": FOR,
        "labels": {
            "severity": "ticket",
            "vital": objective.vital,
            "page_budget": objective.route or "default",
            "budget": objective.shown(),
        },
        "annotations": {
            "summary": f"{label} p75 over its {objective.shown()} budget on {{{{ $labels.http_route }}}}",
            "description": (
                f"Fewer than {QUANTILE:.0%} of the page loads of {{{{ $labels.http_route }}}} had {label} "
                f"within {objective.shown()} over the last {WINDOW} (budget for {scope}, from {source})."
            ),
        },
    }


def page_rule_group(budgets: Budgets, job: str | None = None) -> dict[str, Any] | None:
    """The ``otel-perf-page-alerts`` rule group, or None when the file has no page objective."""
    browser_job = budgets.browser_job(job)
    alerts = [_alert(o, browser_job, budgets.source) for o in page_objectives(budgets)]
    return {"name": "otel-perf-page-alerts", "rules": alerts} if alerts else None


# --- promtool tests -----------------------------------------------------------------------------


def _series(metric: str, job: str, route: str, bound: float, within: str, total: str) -> list[dict[str, str]]:
    labels = f'job="{job}", http_route="{route}"'
    return [
        {"series": f'{metric}_bucket{{{labels}, le="{le_label(bound)}"}}', "values": within},
        {"series": f"{metric}_count{{{labels}}}", "values": total},
    ]


def _expected(objective: PageObjective, alert: dict[str, Any], job: str, route: str) -> dict[str, Any]:
    def render(text: str) -> str:
        return text.replace("{{ $labels.http_route }}", route)

    return {
        "exp_labels": {"job": job, "http_route": route, **alert["labels"]},
        "exp_annotations": {k: render(v) for k, v in alert["annotations"].items()},
    }


def page_promtool_tests(budgets: Budgets, job: str | None = None) -> list[dict[str, Any]]:
    """``promtool test rules`` cases for the page alerts (to add to the file's ``tests``)."""
    browser_job = budgets.browser_job(job) or "demo-browser"
    tests: list[dict[str, Any]] = []
    for objective in page_objectives(budgets):
        alert = _alert(objective, budgets.browser_job(job), budgets.source)
        metric = VITALS[objective.vital][0]
        route = objective.route or _UNLISTED_EXAMPLE
        name = f"page {objective.route or 'defaults'} {objective.vital} <= {objective.shown()}"
        # 10 page loads a minute for an hour; how many of them are within the budget varies.
        fires = [_expected(objective, alert, browser_job, route)]
        cases = [
            ("half the loads over budget: fires", "0+5x60", "0+10x60", fires),
            ("90% within budget: silent", "0+9x60", "0+10x60", []),
            ("over budget but too few loads: silent", "0+0.1x60", "0+0.5x60", []),
        ]
        for what, within, total, expected in cases:
            tests.append(
                {
                    "name": f"{name}: {what}",
                    "interval": "1m",
                    "input_series": _series(metric, browser_job, route, objective.bound, within, total),
                    "alert_rule_test": [
                        {"eval_time": "10m", "alertname": ALERT_PAGE, "exp_alerts": []},
                        {"eval_time": "60m", "alertname": ALERT_PAGE, "exp_alerts": expected},
                    ],
                }
            )
    return tests
