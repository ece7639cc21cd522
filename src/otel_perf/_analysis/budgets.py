"""Performance budgets: one YAML file that drives bucket bounds, stats, alerts, load tests and CI.

File shape (``version: 1``)::

    version: 1
    service: demo                 # optional: Prometheus `job` the generated rules select
    defaults:                     # every route, listed or not, unless overridden
      p95_ms: 500
      p99_ms: 1000
      error_rate: 0.01
      tier: standard              # optional: the tier of routes that name none
    tiers:                        # optional: named sets of objectives
      critical: {p95_ms: 150, p99_ms: 300, error_rate: 0.001}
    routes:                       # "METHOD /route/template" -> objectives
      "GET /api/v1/appointments": {tier: critical, p50_ms: 50}
      "POST /api/v1/appointments": {p95_ms: 250, p99_ms: 500, error_rate: 0.005}
    load:                         # optional: defaults for `otel-perf loadtest`
      users: 100
      spawn_rate: 20
      duration: 60s
    page_defaults:                # optional: page-load objectives of every page (browser script)
      lcp_ms: 2500
      inp_ms: 200
      cls: 0.1
    pages:                        # optional: "/page/route" -> page-load objectives
      "/checkout": {lcp_ms: 2000, inp_ms: 150}
    browser_service: shop-browser # optional: the browser's job (default: service + "-browser")

Objectives (all optional): ``p50_ms``, ``p95_ms``, ``p99_ms`` (latency in milliseconds that the
quantile must not exceed), ``error_rate`` (largest share of failed requests, 0 <= x < 1),
``client_error_rate`` (largest share of requests answered 4xx, 0 <= x < 1),
``availability`` (SLO target for the share of successful requests, 0 < x < 1; defaults to
``1 - error_rate`` where a target is needed), ``queries_per_request`` (at most this many SQL
statements per request at the 95th percentile, a whole number), ``min_rps`` (throughput floor in
requests per second).  ``critical`` (a mapping of the same objectives but ``availability``) is
the second level beside each target, at least as bad as the target (lower, for ``min_rps``):
``defaults: {p95_ms: 500, critical: {p95_ms: 1500}}``.  ``tier`` names the tier; when a
``tiers`` section exists the name must be defined there, otherwise it is a free-form label.

Database objectives (``db_defaults`` and ``db``, keyed ``"OPERATION table"`` as the app reports
``db.operation.name`` and ``db.collection.name``, either may be ``*``): ``p50_ms``, ``p95_ms``,
``p99_ms`` of one statement, and ``critical``.  :meth:`Budgets.db_lookup` takes the most specific
entry, else ``db_defaults``.

Page-load objectives (``page_defaults`` and ``pages``, measured by the browser script at the 75th
percentile of page loads, the Web Vitals convention): ``lcp_ms`` (Largest Contentful Paint),
``inp_ms`` (Interaction to Next Paint), ``cls`` (Cumulative Layout Shift, a unitless score,
0 < x <= 1), ``fcp_ms`` (First Contentful Paint) and ``ttfb_ms`` (time to first byte).  Page
keys are the route templates the server reports (``/orders/{order_id}``), without a method.
A page's budget is ``page_defaults`` overlaid by its own keys (``null`` removes one).

Resolution: a route's budget is ``defaults``, overlaid by its tier's objectives, overlaid by
the route's own keys.  ``null`` removes an inherited objective (``p99_ms: null``).

:meth:`Budgets.lookup` returns the route's resolved budget; a route without an entry gets the
resolved defaults (tier ``defaults.tier`` or ``"default"``), so every measured route is
checked.  Requests that matched no route (empty template) and files whose defaults hold no
objective return ``None`` for unlisted routes.

Every problem raises :class:`BudgetError` naming the file, the line, the key path and what
to do about it.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml

__all__ = [
    "OBJECTIVE_KEYS",
    "PAGE_KEYS",
    "BudgetError",
    "Budgets",
    "DbBudget",
    "LoadProfile",
    "PageBudget",
    "RouteBudget",
    "load_budgets",
    "parse_budgets",
    "parse_duration",
]

#: Largest budgets file read (a budgets file is a page of YAML, not a data set).
MAX_FILE_BYTES = 1 << 20
#: Most YAML nodes visited (guards against alias expansion bombs).
MAX_NODES = 200_000
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")
#: Keys that hold an objective (everything a tier may set).
OBJECTIVE_KEYS = (*LATENCY_KEYS, "error_rate", "client_error_rate", "availability", "queries_per_request",
                  "min_rps")
#: Objectives that may have a critical level beside the target (``critical: {p95_ms: 800}``).
CRITICAL_KEYS = (*LATENCY_KEYS, "error_rate", "client_error_rate", "queries_per_request", "min_rps")
_ENTRY_KEYS = (*OBJECTIVE_KEYS, "tier", "critical")
_TOP_KEYS = ("version", "service", "defaults", "tiers", "routes", "load", "page_defaults", "pages",
             "browser_service", "db_defaults", "db")
#: Database operation objectives (``db_defaults``, ``db``): latency of one statement, in ms.
DB_KEYS = LATENCY_KEYS
_DB_ENTRY_KEYS = (*DB_KEYS, "critical")
_DB_KEY = re.compile(r"^(?P<operation>\*|[A-Za-z_]+)\s+(?P<table>\S+)$")
#: Page-load objectives (browser script, p75 of page loads): milliseconds, except the CLS score.
PAGE_KEYS = ("lcp_ms", "inp_ms", "cls", "fcp_ms", "ttfb_ms")
_LOAD_KEYS = ("users", "spawn_rate", "duration")
_ROUTE_KEY = re.compile(r"^(?P<method>[A-Za-z]+)\s+(?P<route>/\S*)$")
_TIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class BudgetError(ValueError):
    """The budgets file is missing, unreadable or invalid; the message says where and what to do."""


@dataclass(frozen=True)
class RouteBudget:
    """The resolved objectives of one route (``None``: no objective of that kind)."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    availability: float | None = None
    min_rps: float | None = None
    tier: str = "default"
    #: largest share of requests answered 4xx (client errors), 0 <= x < 1
    client_error_rate: float | None = None
    #: at most this many SQL statements per request at the 95th percentile
    queries_per_request: float | None = None
    #: the critical level of objectives that have one: key (p95_ms, error_rate, ...) -> value
    critical: Mapping[str, float] = field(default_factory=dict)

    def latency_ms(self) -> dict[str, float]:
        """``{"p50": ms, ...}`` for the latency objectives that are set, fastest quantile first."""
        out: dict[str, float] = {}
        for key in LATENCY_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key.removesuffix("_ms")] = float(value)
        return out

    def availability_target(self) -> float | None:
        """SLO target for successful requests: ``availability``, else ``1 - error_rate``."""
        if self.availability is not None:
            return self.availability
        if self.error_rate is not None:
            return 1.0 - self.error_rate
        return None

    def max_error_rate(self) -> float | None:
        """Largest acceptable error share: ``error_rate``, else ``1 - availability``."""
        if self.error_rate is not None:
            return self.error_rate
        if self.availability is not None:
            return 1.0 - self.availability
        return None

    def has_objective(self) -> bool:
        """True when at least one objective is set."""
        return any(getattr(self, key) is not None for key in OBJECTIVE_KEYS)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (unset objectives omitted)."""
        out: dict[str, Any] = {"tier": self.tier}
        for key in OBJECTIVE_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.critical:
            out["critical"] = dict(self.critical)
        return out

    def levels(self, key: str) -> tuple[float | None, float | None]:
        """(target, critical) of objective ``key``; ``error_rate`` falls back to ``1 - availability``."""
        target = self.max_error_rate() if key == "error_rate" else getattr(self, key)
        return target, self.critical.get(key)


@dataclass(frozen=True)
class LoadProfile:
    """The ``load`` section: defaults for ``otel-perf loadtest`` (``None``: not given)."""

    users: int | None = None
    spawn_rate: float | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class PageBudget:
    """The resolved page-load objectives of one page (``None``: no objective of that kind)."""

    lcp_ms: float | None = None
    inp_ms: float | None = None
    cls: float | None = None
    fcp_ms: float | None = None
    ttfb_ms: float | None = None

    def objectives(self) -> dict[str, float]:
        """``{"lcp": seconds, ..., "cls": score}`` for the objectives that are set, in PAGE_KEYS order.

        Latencies are in seconds, the unit of the browser's histograms.
        """
        out: dict[str, float] = {}
        for key in PAGE_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key.removesuffix("_ms")] = value / 1000.0 if key.endswith("_ms") else float(value)
        return out

    def has_objective(self) -> bool:
        return any(getattr(self, key) is not None for key in PAGE_KEYS)


@dataclass(frozen=True)
class DbBudget:
    """The resolved latency objectives of one database operation on one table (``None``: unset)."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    critical: Mapping[str, float] = field(default_factory=dict)

    def latency_ms(self) -> dict[str, float]:
        """``{"p95": ms, ...}`` of the latency targets that are set."""
        return {k.removesuffix("_ms"): float(v) for k in DB_KEYS if (v := getattr(self, k)) is not None}

    def levels(self, key: str) -> tuple[float | None, float | None]:
        return getattr(self, key), self.critical.get(key)

    def has_objective(self) -> bool:
        return any(getattr(self, key) is not None for key in DB_KEYS)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k in DB_KEYS if (v := getattr(self, k)) is not None}
        if self.critical:
            out["critical"] = dict(self.critical)
        return out


@dataclass(frozen=True)
class Budgets:
    """A validated budgets file.  Build with :func:`load_budgets` or :func:`parse_budgets`."""

    source: str
    defaults: RouteBudget
    entries: Mapping[tuple[str, str], RouteBudget]
    tiers: Mapping[str, RouteBudget]
    load: LoadProfile
    service: str | None = None
    page_defaults: PageBudget = PageBudget()
    pages: Mapping[str, PageBudget] = field(default_factory=dict)
    browser_service: str | None = None
    db_defaults: DbBudget = DbBudget()
    #: (OPERATION, table) -> objectives; OPERATION or table may be "*"
    db: Mapping[tuple[str, str], DbBudget] = field(default_factory=dict)

    def db_lookup(self, operation: str, table: str) -> DbBudget | None:
        """The budget of ``operation`` on ``table``: exact, ``OP *``, ``* table``, then db_defaults."""
        op = operation.upper()
        for key in ((op, table), (op, "*"), ("*", table)):
            found = self.db.get(key)
            if found is not None:
                return found
        return self.db_defaults if self.db_defaults.has_objective() else None

    def db_bounds_seconds(self) -> list[float]:
        """Every DB latency threshold (targets and critical levels) in seconds, for the histogram buckets."""
        values: set[float] = set()
        for budget in (self.db_defaults, *self.db.values()):
            values.update(ms / 1000.0 for ms in budget.latency_ms().values())
            values.update(v / 1000.0 for k, v in budget.critical.items() if k in DB_KEYS)
        return sorted(values)

    def query_bounds(self) -> list[float]:
        """Every queries-per-request objective (targets and critical levels), for the histogram buckets."""
        values: set[float] = set()
        for budget in (self.defaults, *self.entries.values()):
            for value in budget.levels("queries_per_request"):
                if value is not None:
                    values.add(float(value))
        return sorted(values)

    def page_lookup(self, route: str) -> PageBudget | None:
        """The page-load budget of the page ``route``: its own entry, else ``page_defaults``."""
        found = self.pages.get(route)
        if found is not None:
            return found
        return self.page_defaults if self.page_defaults.has_objective() else None

    def browser_job(self, job: str | None = None) -> str | None:
        """The Prometheus job of the browser telemetry: ``browser_service``, else the server's + -browser."""
        if self.browser_service:
            return self.browser_service
        server = job if job is not None else self.service
        return f"{server}-browser" if server else None

    def page_bounds(self) -> dict[str, list[float]]:
        """Every page objective per vital (seconds; CLS as a score), sorted, without duplicates.

        The browser script adds these to its histogram bounds, so "share of page loads within the
        budget" is exact in the metrics and the alert rules.
        """
        values: dict[str, set[float]] = {}
        for budget in (self.page_defaults, *self.pages.values()):
            for vital, bound in budget.objectives().items():
                values.setdefault(vital, set()).add(bound)
        return {vital: sorted(bounds) for vital, bounds in values.items()}

    def lookup(self, method: str, route: str) -> RouteBudget | None:
        """The budget of ``method route``: its own entry, else the defaults (see module docs)."""
        found = self.entries.get((method.upper(), route))
        if found is not None:
            return found
        if not route or not self.defaults.has_objective():
            return None
        return self.defaults

    def routes(self) -> list[tuple[str, str, RouteBudget]]:
        """``(method, route, budget)`` for every listed route, in file order."""
        return [(method, route, budget) for (method, route), budget in self.entries.items()]

    def bounds_seconds(self) -> list[float]:
        """Every latency threshold (defaults and routes) in seconds, sorted, without duplicates.

        The app adds these to its request-duration histogram bounds, which makes "share of
        requests under the budget" exact in the metrics and the alert rules.
        """
        values: set[float] = set()
        for budget in (self.defaults, *self.entries.values()):
            values.update(ms / 1000.0 for ms in budget.latency_ms().values())
            values.update(v / 1000.0 for k, v in budget.critical.items() if k in LATENCY_KEYS)
        return sorted(values)

    def __iter__(self) -> Iterator[tuple[str, str, RouteBudget]]:
        return iter(self.routes())

    def __len__(self) -> int:
        return len(self.entries)


# --- parsing -------------------------------------------------------------------------------


class _Doc:
    """A YAML document as plain Python values plus the line of every key path.

    Shared with the load-test scenario parser, which passes its own error class.
    """

    def __init__(self, source: str, error_cls: type[ValueError] = BudgetError) -> None:
        self.source = source
        self.error_cls = error_cls
        self.lines: dict[tuple[str, ...], int] = {}
        self._visited = 0
        # yaml is imported when a file is read, not with this module (the metrics views import
        # it at start-up): 0.9 MB of RSS that a process without budgets or views files keeps
        import yaml

        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, path: tuple[str, ...], message: str) -> ValueError:
        line = self.lines.get(path)
        where = f"{self.source}:{line}" if line else self.source
        shown = _show_path(path)
        return self.error_cls(f"{where}: {shown + ': ' if shown else ''}{message}")

    def parse(self, text: str, what: str) -> Any:
        """Compose and build ``text``; syntax errors become ``error_cls`` with the line."""
        import yaml

        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark else ""
            raise self.error_cls(f"{self.source}{line}: not valid YAML: {exc.problem or exc}. Fix the syntax "
                                 "(quote keys and values that contain ': ' or '#').") from None
        except yaml.YAMLError as exc:
            raise self.error_cls(f"{self.source}: not valid YAML: {exc}.") from None
        if node is None:
            raise self.error_cls(f"{self.source}: the file is empty; {what}")
        return self.build(node, ())

    def build(self, node: yaml.Node, path: tuple[str, ...]) -> Any:
        import yaml

        self._visited += 1
        if self._visited > MAX_NODES:
            raise self.error((), f"more than {MAX_NODES} YAML nodes (alias expansion?); "
                                 "a budgets file needs far fewer. Remove the aliases.")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, str(i))) for i, child in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: tuple[str, ...]) -> dict[str, Any]:
        import yaml

        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value = self.build(source, path)
                    if not isinstance(value, dict):
                        raise self.error(path, "a YAML merge key (<<) must point at a mapping.")
                    for k, v in value.items():
                        merged.setdefault(k, v)
                continue
            key = self._constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in out:
                first = self.lines.get(child)
                raise self.error_cls(
                    f"{self.source}:{key_node.start_mark.line + 1}: {_show_path(child)}: duplicate key "
                    f"(first defined on line {first}); YAML keeps only the last one. Remove one of them."
                )
            self.lines[child] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, child)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out


def _show_path(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        elif part.isdigit():  # a list index
            out += f"[{part}]"
        else:
            out += f"[{part!r}]"
    return out.replace("'", '"')


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"2m"``, ``"1h30m"``, ``"500ms"``; ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 60s, 2m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not text or _DURATION_PART.sub("", text):
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration; use e.g. 60s, 2m or 1h30m") from None
        else:
            unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(num) * unit[u] for num, u in _DURATION_PART.findall(text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def _number(doc: _Doc, path: tuple[str, ...], value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise doc.error(path, f"{value!r} is not a number; write a plain number such as 150.")
    number = float(value)
    if not math.isfinite(number):
        raise doc.error(path, f"{value!r} is not a finite number.")
    return number


def _objectives(doc: _Doc, path: tuple[str, ...], raw: Any, *, allow_tier: bool,
                keys: tuple[str, ...] | None = None,
                critical_keys: tuple[str, ...] = CRITICAL_KEYS) -> dict[str, Any]:
    """Validate one defaults/tier/route mapping; values are kept (None = explicitly removed).

    ``keys``: the keys allowed (a ``critical`` mapping, a database entry); by default the
    objectives, ``critical`` and, with ``allow_tier``, ``tier``.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error(path, f"expected a mapping of objectives (p95_ms, error_rate, ...), got {raw!r}.")
    allowed = keys if keys is not None else _ENTRY_KEYS if allow_tier else (*OBJECTIVE_KEYS, "critical")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = (*path, key)
        if key not in allowed:
            hint = ""
            if key == "tier":
                hint = " A tier cannot name another tier."
            elif key in ("p50", "p95", "p99", "p90_ms", "p999_ms"):
                hint = " Latency objectives are p50_ms, p95_ms and p99_ms."
            elif key in ("max_queries", "queries"):
                hint = " The queries objective is queries_per_request."
            elif key == "critical" and path and path[-1] == "critical":
                hint = " A critical level has no critical level of its own."
            elif path and path[-1] == "critical":
                hint = " A critical level is given for a target objective of the same entry."
            raise doc.error(where, f"unknown key {key!r}; expected one of {', '.join(allowed)}.{hint}")
        if value is None:
            out[key] = None
            continue
        if key == "critical":
            out[key] = _objectives(doc, where, value, allow_tier=False, keys=critical_keys)
            continue
        if key == "tier":
            if not isinstance(value, str) or not _TIER_NAME.match(value):
                raise doc.error(where, f"{value!r} is not a tier name; use letters, digits, _ . - "
                                       "(e.g. critical).")
            out[key] = value
            continue
        number = _number(doc, where, value)
        if key in LATENCY_KEYS and number <= 0:
            raise doc.error(where, f"{value!r} ms is not a latency budget; use a positive number of "
                                   "milliseconds.")
        if key == "error_rate" and not 0 <= number < 1:
            hint = f" (did you mean {number / 100:g}?)" if 1 <= number < 100 else ""
            raise doc.error(where, f"{value!r} is not a ratio; error_rate is a share between 0 and 1, "
                                   f"e.g. 0.001 for 0.1%{hint}.")
        if key == "availability" and not 0 < number < 1:
            hint = f" (did you mean {number / 100:g}?)" if 1 < number <= 100 else ""
            raise doc.error(where, f"{value!r} is not a ratio; availability is a share strictly between "
                                   f"0 and 1, e.g. 0.999 for 99.9%{hint}.")
        if key == "min_rps" and number < 0:
            raise doc.error(where, f"{value!r} is negative; min_rps is a throughput floor in requests "
                                   "per second.")
        if key == "client_error_rate" and not 0 <= number < 1:
            hint = f" (did you mean {number / 100:g}?)" if 1 <= number < 100 else ""
            raise doc.error(where, f"{value!r} is not a ratio; client_error_rate is the share of 4xx answers "
                                   f"between 0 and 1, e.g. 0.05 for 5%{hint}.")
        if key == "queries_per_request" and (number < 0 or not float(number).is_integer()):
            raise doc.error(where, f"{value!r} is not a statement count; queries_per_request is a whole "
                                   "number of SQL statements, e.g. 5.")
        out[key] = number
    return out


def _resolve(doc: _Doc, path: tuple[str, ...], layers: list[tuple[str, Mapping[str, Any]]],
             tier: str) -> RouteBudget:
    """Overlay ``layers`` (name, objectives) in order and check the latency quantiles are ordered."""
    values: dict[str, Any] = {}
    critical: dict[str, Any] = {}
    for _name, layer in layers:
        values.update({k: v for k, v in layer.items() if k not in ("tier", "critical")})
        critical.update(layer.get("critical") or {})
    levels = _critical_levels(doc, path, layers, values, critical)
    budget = RouteBudget(**{k: values.get(k) for k in OBJECTIVE_KEYS}, tier=tier, critical=levels)
    set_ms = [(key, getattr(budget, key)) for key in LATENCY_KEYS if getattr(budget, key) is not None]
    for (lo_key, lo), (hi_key, hi) in itertools.pairwise(set_ms):
        if lo > hi:
            origin = [name for name, layer in layers if lo_key in layer or hi_key in layer]
            raise doc.error(
                (*path, lo_key) if (*path, lo_key) in doc.lines else path,
                f"{lo_key} {lo:g} is greater than {hi_key} {hi:g} (after merging "
                f"{' + '.join(origin) or 'defaults'}); a lower quantile cannot have a larger budget. "
                f"Lower {lo_key} or raise {hi_key}.",
            )
    return budget


#: Objectives where a larger measured value is better (a floor): the critical level is lower.
_FLOORS = ("min_rps",)


def _critical_levels(doc: _Doc, path: tuple[str, ...], layers: list[tuple[str, Mapping[str, Any]]],
                     targets: Mapping[str, Any], critical: Mapping[str, Any]) -> dict[str, float]:
    """The merged critical levels; each must sit beside its target, on the far side of it."""
    out: dict[str, float] = {}
    for key, value in critical.items():
        if value is None:
            continue
        where = (*path, "critical", key)
        shown = where if where in doc.lines else path
        target = targets.get(key)
        if target is None and key == "error_rate" and targets.get("availability") is not None:
            target = 1.0 - targets["availability"]
        if target is None:
            origin = [name for name, layer in layers if key in (layer.get("critical") or {})]
            raise doc.error(shown, f"a critical level of {key} without a target {key} (after merging "
                                   f"{' + '.join(origin) or 'defaults'}); set {key} too, or remove "
                                   f"critical.{key} (null).")
        if key in _FLOORS and value > target:
            raise doc.error(shown, f"critical {key} {value:g} is above the target {target:g}; a critical "
                                   "floor is the lower one.")
        if key not in _FLOORS and value < target:
            raise doc.error(shown, f"critical {key} {value:g} is below the target {target:g}; the critical "
                                   "level is the worse one (at least the target).")
        out[key] = float(value)
    return out


def _route_key(doc: _Doc, key: str) -> tuple[str, str]:
    path = ("routes", key)
    match = _ROUTE_KEY.match(key.strip())
    if not match:
        raise doc.error(path, "a route key is \"METHOD /route/template\", e.g. "
                              "\"GET /api/v1/appointments/{appointment_id}\".")
    method, route = match["method"].upper(), match["route"]
    if method not in METHODS:
        raise doc.error(path, f"unknown HTTP method {match['method']!r}; use one of {', '.join(METHODS)}.")
    if "?" in route or "#" in route:
        raise doc.error(path, "a route template has no query string or fragment; remove the part "
                              "from '?' or '#'.")
    depth = 0
    for ch in route:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise doc.error(path, "unbalanced braces in the route template; parameters look like "
                                  "{appointment_id}.")
    if depth:
        raise doc.error(path, "unbalanced braces in the route template; parameters look like "
                              "{appointment_id}.")
    return method, route


def _load_section(doc: _Doc, raw: Any) -> LoadProfile:
    if raw is None:
        return LoadProfile()
    if not isinstance(raw, dict):
        raise doc.error(("load",), "expected a mapping with users, spawn_rate and duration.")
    for key in raw:
        if key not in _LOAD_KEYS:
            raise doc.error(("load", key), f"unknown key {key!r}; expected one of {', '.join(_LOAD_KEYS)}.")
    users = raw.get("users")
    if users is not None and (isinstance(users, bool) or not isinstance(users, int) or not
                              1 <= users <= 100_000):
        raise doc.error(("load", "users"), f"{users!r} is not a user count; use a whole number from 1 "
                                           "to 100000.")
    spawn = raw.get("spawn_rate")
    spawn_rate = None
    if spawn is not None:
        spawn_rate = _number(doc, ("load", "spawn_rate"), spawn)
        if spawn_rate <= 0:
            raise doc.error(("load", "spawn_rate"), "spawn_rate is users started per second; use a "
                                                    "positive number.")
    duration = None
    if raw.get("duration") is not None:
        try:
            duration = parse_duration(raw["duration"])
        except ValueError as exc:
            raise doc.error(("load", "duration"), f"{exc}.") from None
    return LoadProfile(users=users, spawn_rate=spawn_rate, duration_s=duration)


def _page_objectives(doc: _Doc, path: tuple[str, ...], raw: Any) -> dict[str, Any]:
    """Validate one page_defaults/pages mapping; values are kept (None = explicitly removed)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error(path, f"expected a mapping of page-load objectives (lcp_ms, inp_ms, cls, ...), "
                              f"got {raw!r}.")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = (*path, key)
        if key not in PAGE_KEYS:
            hint = ""
            if key in ("lcp", "inp", "fcp", "ttfb"):
                hint = f" Page latencies are in milliseconds: {key}_ms."
            elif key in OBJECTIVE_KEYS or key == "tier":
                hint = " Server objectives go under routes:, keyed \"METHOD /route\"."
            raise doc.error(where, f"unknown key {key!r}; expected one of {', '.join(PAGE_KEYS)}.{hint}")
        if value is None:
            out[key] = None
            continue
        number = _number(doc, where, value)
        if key == "cls":
            if not 0 < number <= 1:
                raise doc.error(where, f"{value!r} is not a CLS budget; CLS is a unitless score, e.g. 0.1 "
                                       "(good) or 0.25 (poor), between 0 and 1.")
        elif number <= 0:
            raise doc.error(where, f"{value!r} ms is not a page-load budget; use a positive number of "
                                   "milliseconds, e.g. 2500.")
        out[key] = number
    return out


def _page_key(doc: _Doc, key: str) -> str:
    path = ("pages", key)
    route = key.strip()
    if _ROUTE_KEY.match(route):
        raise doc.error(path, "a page key is the page's route template alone, without a method, e.g. "
                              "\"/orders/{order_id}\".")
    if not route.startswith("/") or any(c.isspace() for c in route):
        raise doc.error(path, "a page key is a route template starting with '/', e.g. \"/checkout\".")
    if "?" in route or "#" in route:
        raise doc.error(path, "a route template has no query string or fragment; remove the part "
                              "from '?' or '#'.")
    return route


def _pages(doc: _Doc, root: dict[str, Any]) -> tuple[PageBudget, dict[str, PageBudget]]:
    defaults_raw = _page_objectives(doc, ("page_defaults",), root.get("page_defaults"))
    defaults = PageBudget(**{k: v for k, v in defaults_raw.items() if v is not None})
    raw = root.get("pages")
    if raw is None:
        return defaults, {}
    if not isinstance(raw, dict):
        raise doc.error(("pages",), "expected a mapping of \"/page/route\" -> page-load objectives.")
    pages: dict[str, PageBudget] = {}
    for key, value in raw.items():
        route = _page_key(doc, key)
        if route in pages:
            raise doc.error(("pages", key), "the same page twice; merge the two entries.")
        own = _page_objectives(doc, ("pages", key), value)
        merged = {**defaults_raw, **own}
        pages[route] = PageBudget(**{k: v for k, v in merged.items() if v is not None})
    return defaults, pages


def _db_budget(doc: _Doc, path: tuple[str, ...], layers: list[tuple[str, Mapping[str, Any]]]) -> DbBudget:
    values: dict[str, Any] = {}
    critical: dict[str, Any] = {}
    for _name, layer in layers:
        values.update({k: v for k, v in layer.items() if k != "critical"})
        critical.update(layer.get("critical") or {})
    budget = DbBudget(**{k: values.get(k) for k in DB_KEYS},
                      critical=_critical_levels(doc, path, layers, values, critical))
    set_ms = [(key, getattr(budget, key)) for key in DB_KEYS if getattr(budget, key) is not None]
    for (lo_key, lo), (hi_key, hi) in itertools.pairwise(set_ms):
        if lo > hi:
            raise doc.error(path, f"{lo_key} {lo:g} is greater than {hi_key} {hi:g}; a lower quantile cannot "
                                  f"have a larger budget. Lower {lo_key} or raise {hi_key}.")
    return budget


def _db(doc: _Doc, root: dict[str, Any]) -> tuple[DbBudget, dict[tuple[str, str], DbBudget]]:
    """``db_defaults`` and ``db``: latency objectives per statement, by operation and table."""
    defaults_raw = _objectives(doc, ("db_defaults",), root.get("db_defaults"), allow_tier=False,
                               keys=_DB_ENTRY_KEYS, critical_keys=DB_KEYS)
    defaults = _db_budget(doc, ("db_defaults",), [("db_defaults", defaults_raw)])
    raw = root.get("db")
    if raw is None:
        return defaults, {}
    if not isinstance(raw, dict):
        raise doc.error(("db",), "expected a mapping of \"OPERATION table\" -> objectives, e.g. "
                                 "\"SELECT appointments\": {p95_ms: 10}.")
    out: dict[tuple[str, str], DbBudget] = {}
    for key, value in raw.items():
        path = ("db", key)
        match = _DB_KEY.match(str(key).strip())
        if not match:
            raise doc.error(path, "a database key is \"OPERATION table\" as the app reports "
                                  "db.operation.name and db.collection.name, e.g. \"SELECT appointments\"; "
                                  "either may be * (any).")
        operation, table = match["operation"].upper(), match["table"]
        if (operation, table) in out:
            raise doc.error(path, "the same operation and table twice; merge the two entries.")
        own = _objectives(doc, path, value, allow_tier=False, keys=_DB_ENTRY_KEYS, critical_keys=DB_KEYS)
        out[(operation, table)] = _db_budget(doc, path, [("db_defaults", defaults_raw), ("the entry", own)])
    return defaults, out


def _tier_budget(name: str, layer: Mapping[str, Any]) -> RouteBudget:
    objectives: dict[str, Any] = {k: layer.get(k) for k in OBJECTIVE_KEYS}
    critical = {k: v for k, v in (layer.get("critical") or {}).items() if v is not None}
    return RouteBudget(**objectives, tier=name, critical=critical)


def parse_budgets(text: str, source: str = "<budgets>") -> Budgets:
    """Parse and validate the YAML ``text`` of a budgets file (``source`` names it in errors)."""
    doc = _Doc(source)
    root = doc.parse(text, "start with 'version: 1' and a 'routes:' mapping.")
    if not isinstance(root, dict):
        raise BudgetError(f"{source}: the top level must be a mapping with version, defaults, routes, ...")
    for key in root:
        if key not in _TOP_KEYS:
            raise doc.error((key,), f"unknown top-level key {key!r}; expected one of {', '.join(_TOP_KEYS)}.")
    version = root.get("version")
    if version is None:
        raise BudgetError(f"{source}: missing 'version: 1' at the top; add it (it lets future formats "
                          "be told apart).")
    if isinstance(version, bool) or version != 1:
        raise doc.error(("version",), f"unsupported version {version!r}; this otel-perf reads version 1.")
    service = root.get("service")
    if service is not None and (not isinstance(service, str) or not service.strip()):
        raise doc.error(("service",), "expected the service name (the Prometheus job label) as text.")

    tiers_raw = root.get("tiers")
    tiers: dict[str, dict[str, Any]] = {}
    if tiers_raw is not None:
        if not isinstance(tiers_raw, dict):
            raise doc.error(("tiers",), "expected a mapping of tier name -> objectives, e.g. "
                                        "critical: {p95_ms: 150}.")
        for name, raw in tiers_raw.items():
            if not _TIER_NAME.match(name):
                raise doc.error(("tiers", name), "a tier name uses letters, digits, _ . - (e.g. critical).")
            tiers[name] = _objectives(doc, ("tiers", name), raw, allow_tier=False)
    defined_tiers = tiers_raw is not None

    def tier_layer(path: tuple[str, ...], name: str | None) -> dict[str, Any]:
        if name is None:
            return {}
        if name in tiers:
            return tiers[name]
        if defined_tiers:
            known = ", ".join(sorted(tiers)) or "(none)"
            raise doc.error(path, f"unknown tier {name!r}; the tiers section defines {known}. Add it there "
                                  "or fix the name.")
        return {}

    defaults_raw = _objectives(doc, ("defaults",), root.get("defaults"), allow_tier=True)
    default_tier = defaults_raw.get("tier")
    default_tier_layer = tier_layer(("defaults", "tier"), default_tier)
    defaults = _resolve(doc, ("defaults",), [("defaults", defaults_raw),
                                             (f"tier {default_tier!r}", default_tier_layer)],
                        tier=default_tier or "default")

    routes_raw = root.get("routes")
    if routes_raw is None:
        routes_raw = {}
    if not isinstance(routes_raw, dict):
        raise doc.error(("routes",), "expected a mapping of \"METHOD /route\" -> objectives.")
    entries: dict[tuple[str, str], RouteBudget] = {}
    seen: dict[tuple[str, str], str] = {}
    for key, raw in routes_raw.items():
        method, route = _route_key(doc, key)
        if (method, route) in seen:
            raise doc.error(("routes", key), f"the same route as {seen[(method, route)]!r}; merge the "
                                             "two entries.")
        seen[(method, route)] = key
        path = ("routes", key)
        own = _objectives(doc, path, raw, allow_tier=True)
        tier = own.get("tier") or default_tier
        layer = tier_layer((*path, "tier") if own.get("tier") else ("defaults", "tier"), tier)
        entries[(method, route)] = _resolve(
            doc, path, [("defaults", defaults_raw), (f"tier {tier!r}", layer), ("the route entry", own)],
            tier=tier or "default")
    page_defaults, pages = _pages(doc, root)
    db_defaults, db = _db(doc, root)
    browser_service = root.get("browser_service")
    if browser_service is not None and (not isinstance(browser_service, str) or not browser_service.strip()):
        raise doc.error(("browser_service",), "expected the browser's service name (its Prometheus job) "
                                              "as text.")
    return Budgets(
        source=source,
        defaults=defaults,
        page_defaults=page_defaults,
        pages=pages,
        browser_service=browser_service.strip() if isinstance(browser_service, str) else None,
        entries=entries,
        tiers={name: _tier_budget(name, layer) for name, layer in tiers.items()},
        db_defaults=db_defaults,
        db=db,
        load=_load_section(doc, root.get("load")),
        service=service.strip() if isinstance(service, str) else None,
    )


def _read_text(path: str | os.PathLike[str], error_cls: type[ValueError], kind: str,
               hint: str) -> tuple[str, str]:
    """(name, UTF-8 text) of a small YAML file; ``error_cls`` says what is wrong with it."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise error_cls(f"{name}: no such {kind} file; check the path ({hint}).") from None
    except IsADirectoryError:
        raise error_cls(f"{name}: is a directory; point at the {kind} YAML file inside it.") from None
    except OSError as exc:
        raise error_cls(f"{name}: cannot read the {kind} file: {exc.strerror or exc}.") from None
    if len(data) > MAX_FILE_BYTES:
        raise error_cls(f"{name}: larger than {MAX_FILE_BYTES} bytes; a {kind} file is a page of YAML. "
                        "Is this the right file?")
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error_cls(f"{name}: not UTF-8 text (byte {exc.start}); save the file as UTF-8.") from None


def load_budgets(path: str | os.PathLike[str]) -> Budgets:
    """Read and validate the budgets file at ``path``; :class:`BudgetError` says what is wrong."""
    name, text = _read_text(path, BudgetError, "budgets", "OTEL_PERF_BUDGETS or the command argument")
    return parse_budgets(text, name)
