"""Load-test scenarios: a small YAML of weighted requests, or a Locust file.

YAML shape::

    name: appointments                 # optional; tags the run and names the report
    wait: {min_ms: 500, max_ms: 1500}  # think time of each user between two requests
    headers: {X-Tenant: demo}          # optional, sent with every request
    requests:
      - path: /api/v1/appointments     # method defaults to GET, weight to 1
        query: {limit: 10}
        weight: 5
      - path: /api/v1/appointments/{appointment_id}
        params: {appointment_id: {range: [1, 40]}}   # or a list of values
        weight: 10
      - method: POST
        path: /api/v1/appointments
        json: {patient_id: 1, reason: checkup}
        expect: [201]                  # statuses that count as success (default: below 400)

Each request is reported under ``"METHOD /path/template"`` -- the same key the budgets file
and the app's ``http.route`` use, so client and server numbers line up per route.  A path
placeholder ``{name}`` is filled from ``params`` for every request.

A ``.py`` file is a Locust file (its ``User`` classes run as they are); ``demo`` names the
bundled scenario for the demo app.  Nothing here imports Locust.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from otel_perf._analysis.budgets import METHODS, _Doc, _read_text

__all__ = ["BUILTIN", "RequestSpec", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

BUILTIN = ("demo",)
_TOP_KEYS = ("name", "wait", "headers", "requests")
_REQUEST_KEYS = ("name", "method", "path", "query", "params", "json", "body", "headers", "weight", "expect")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")
MAX_REQUESTS = 200


class ScenarioError(ValueError):
    """The scenario is missing or invalid; the message says where and what to do."""


@dataclass(frozen=True)
class RequestSpec:
    """One weighted request of a YAML scenario."""

    method: str
    path: str
    weight: float = 1.0
    name: str = ""
    query: dict[str, str] = field(default_factory=dict)
    params: dict[str, tuple[Any, ...] | tuple[int, int]] = field(default_factory=dict)
    ranges: frozenset[str] = frozenset()
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """``"METHOD /template"``: the name results, budgets and server routes share."""
        return f"{self.method} {self.path}"

    def url(self, rng: random.Random) -> str:
        """A concrete path (placeholders filled, query appended) for one request."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            values = self.params[name]
            if name in self.ranges:
                lo, hi = values
                return str(rng.randint(int(lo), int(hi)))
            return quote(str(rng.choice(values)), safe="")

        path = _PLACEHOLDER.sub(fill, self.path)
        return f"{path}?{urlencode(self.query)}" if self.query else path

    def ok(self, status: int) -> bool:
        """Does ``status`` count as success?"""
        return status in self.expect if self.expect else 0 < status < 400


@dataclass(frozen=True)
class Scenario:
    """A YAML scenario (``requests``) or a Locust file (``locustfile``)."""

    name: str
    source: str
    requests: tuple[RequestSpec, ...] = ()
    wait_min_s: float = 0.5
    wait_max_s: float = 1.5
    headers: dict[str, str] = field(default_factory=dict)
    locustfile: str | None = None

    def keys(self) -> list[str]:
        """Endpoint keys of a YAML scenario, in file order."""
        return [r.key for r in self.requests]


def _str_map(doc: _Doc, path: tuple[str, ...], raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error(path, f"expected a mapping of {what}.")
    out = {}
    for k, v in raw.items():
        if isinstance(v, (dict, list)) or v is None:
            raise doc.error((*path, k), f"expected a plain value for {what} {k!r}.")
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _request(doc: _Doc, index: int, raw: Any) -> RequestSpec:
    path = ("requests", str(index))
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise doc.error(path, "expected a mapping with at least `path`, e.g. {path: /hello, weight: 2}.")
    for key in raw:
        if key not in _REQUEST_KEYS:
            raise doc.error((*path, key), f"unknown key {key!r}; expected one of {', '.join(_REQUEST_KEYS)}.")
    method = str(raw.get("method", "GET")).upper()
    if method not in METHODS:
        raise doc.error((*path, "method"), f"unknown HTTP method {method!r}; use one of "
                                           f"{', '.join(METHODS)}.")
    target = raw.get("path")
    if not isinstance(target, str) or not target.startswith("/") or any(c.isspace() for c in target):
        raise doc.error((*path, "path"), "expected a path starting with '/', e.g. /api/v1/appointments "
                                         "(the host comes from --host).")
    if "?" in target:
        raise doc.error((*path, "path"), "put query parameters under `query:`, not in the path, so the "
                                         "endpoint name stays the route template.")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise doc.error((*path, "weight"), f"{weight!r} is not a weight; use a positive number.")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise doc.error((*path, "params"), "expected a mapping of placeholder -> list of values or "
                                           "{range: [lo, hi]}.")
    params: dict[str, tuple[Any, ...] | tuple[int, int]] = {}
    ranges: set[str] = set()
    for name, spec in params_raw.items():
        where = (*path, "params", name)
        if isinstance(spec, dict) and set(spec) == {"range"}:
            lo_hi = spec["range"]
            whole = isinstance(lo_hi, list) and all(type(x) is int for x in lo_hi)
            if not whole or len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise doc.error(where, "range takes two whole numbers [lo, hi] with lo <= hi.")
            params[name] = (lo_hi[0], lo_hi[1])
            ranges.add(name)
        elif isinstance(spec, list) and spec and all(not isinstance(x, (dict, list)) for x in spec):
            params[name] = tuple(spec)
        elif not isinstance(spec, (dict, list)) and spec is not None:
            params[name] = (spec,)
        else:
            raise doc.error(where, "expected a value, a non-empty list of values or {range: [lo, hi]}.")
    placeholders = _PLACEHOLDER.findall(target)
    for name in placeholders:
        if name not in params:
            raise doc.error((*path, "path"), f"placeholder {{{name}}} has no values; add params: "
                                             f"{{{name}: {{range: [1, 100]}}}} or a list.")
    for name in params:
        if name not in placeholders:
            raise doc.error((*path, "params", name), f"the path has no {{{name}}} placeholder; remove it or "
                                                     "fix the path.")
    expect_raw = raw.get("expect", [])
    expect_list = expect_raw if isinstance(expect_raw, list) else [expect_raw]
    if not all(isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599 for x in expect_list):
        raise doc.error((*path, "expect"), "expected HTTP status codes, e.g. [200, 201].")
    if "json" in raw and "body" in raw:
        raise doc.error(path, "use either `json` or `body`, not both.")
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        raise doc.error((*path, "body"), "`body` is sent as text; use `json` for structured data.")
    name = raw.get("name", "")
    return RequestSpec(
        method=method, path=target, weight=float(weight), name=str(name) if name else "",
        query=_str_map(doc, (*path, "query"), raw.get("query"), "query parameters"),
        params=params, ranges=frozenset(ranges), json=raw.get("json"), body=body,
        headers=_str_map(doc, (*path, "headers"), raw.get("headers"), "headers"),
        expect=tuple(expect_list),
    )


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate a YAML scenario (``source`` names it in errors)."""
    doc = _Doc(source, ScenarioError)
    root = doc.parse(text, "add a `requests:` list of {path, weight}.")
    if not isinstance(root, dict):
        raise ScenarioError(f"{source}: the top level must be a mapping with `requests:`.")
    for key in root:
        if key not in _TOP_KEYS:
            raise doc.error((key,), f"unknown key {key!r}; expected one of {', '.join(_TOP_KEYS)}.")
    raw_requests = root.get("requests")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise doc.error(("requests",), "expected a non-empty list of requests, e.g. "
                                       "- {path: /api/v1/appointments, weight: 3}.")
    if len(raw_requests) > MAX_REQUESTS:
        raise doc.error(("requests",), f"more than {MAX_REQUESTS} requests; use a Locust file for that.")
    requests = tuple(_request(doc, i, r) for i, r in enumerate(raw_requests))
    seen: dict[str, int] = {}
    for i, r in enumerate(requests):
        if r.key in seen and r.query == requests[seen[r.key]].query and r.json == requests[seen[r.key]].json:
            raise doc.error(("requests", str(i)), f"same request as entry {seen[r.key]}; merge them (add "
                                                  "their weights).")
        seen.setdefault(r.key, i)
    wait = root.get("wait") or {}
    if not isinstance(wait, dict) or set(wait) - {"min_ms", "max_ms"}:
        raise doc.error(("wait",), "expected {min_ms: 500, max_ms: 1500} (think time between requests).")
    lo: Any = wait.get("min_ms", 500)
    hi: Any = wait.get("max_ms", max(lo, 1500) if isinstance(lo, (int, float)) else 1500)
    for key, value in (("min_ms", lo), ("max_ms", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise doc.error(("wait", key), f"{value!r} is not a think time; use milliseconds >= 0.")
    if lo > hi:
        raise doc.error(("wait",), f"min_ms {lo} is greater than max_ms {hi}.")
    name = root.get("name")
    if name is None:
        stem = os.path.splitext(os.path.basename(source))[0]
        name = re.sub(r"[^A-Za-z0-9_.-]", "", stem)[:64] or "scenario"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise doc.error(("name",), "a scenario name uses letters, digits, _ . - (at most 64).")
    headers = _str_map(doc, ("headers",), root.get("headers"), "headers")
    return Scenario(name=name, source=source, requests=requests, wait_min_s=lo / 1000.0,
                    wait_max_s=hi / 1000.0, headers=headers)


def load_scenario(path: str) -> Scenario:
    """A scenario from a YAML file, a Locust ``.py`` file, or a bundled name (``demo``)."""
    if path in BUILTIN:
        text = resources.files("otel_perf._loadtest").joinpath(f"{path}.yaml").read_text(encoding="utf-8")
        return parse_scenario(text, f"<bundled scenario {path}>")
    if path.endswith(".py"):
        if not os.path.isfile(path):
            raise ScenarioError(f"{path}: no such Locust file; check the path.")
        return Scenario(name=os.path.splitext(os.path.basename(path))[0], source=path, locustfile=path)
    name, text = _read_text(path, ScenarioError, "scenario", "--scenario")
    return parse_scenario(text, name)
