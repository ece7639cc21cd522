"""Metric Views from a file: the SDK's ``View`` for its instruments, the same rules for ours.

The Python SDK takes Views only in code.  ``OTEL_PERF_METRIC_VIEWS=views.yaml`` names a file
in the shape of the OpenTelemetry declarative configuration's ``meter_provider.views``
(so a declarative configuration file, ``OTEL_CONFIG_FILE``, can be named as it is)::

    views:                                   # or meter_provider: {views: [...]}
      - selector:                            # every key optional; all given must match
          instrument_name: db.client.*       # * and ? wildcards
          instrument_type: histogram         # counter, up_down_counter, histogram, gauge, observable_counter,
                                             # observable_up_down_counter, observable_gauge
          unit: s
          meter_name: otel_perf              # our instruments' meter; the SDK's have their own
          meter_version: "1.0"
          meter_schema_url: https://...
        stream:                              # every key optional
          name: db.duration                  # rename (the selector must name one instrument)
          description: ...
          attribute_keys: {included: [db.system.name, db.operation.name], excluded: [error.type]}
          aggregation:                       # one of:
            drop: {}
            default: {}
            sum: {}
            last_value: {}
            explicit_bucket_histogram: {boundaries: [0.01, 0.1, 1], record_min_max: true}
            base2_exponential_bucket_histogram: {max_size: 160, max_scale: 20, record_min_max: true}
          aggregation_cardinality_limit: 2000

Every problem raises :class:`ViewsError` naming the file, the line and the key path.  What
a rule cannot do to one of our instruments, or to the SDK's, is listed by :func:`notes` so
the bootstrap says it once.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otel_perf._metrics import instruments as fast
from otel_perf._metrics.exponential import DEFAULT_MAX_SCALE, DEFAULT_MAX_SIZE

if TYPE_CHECKING:
    from otel_perf._analysis.budgets import _Doc

__all__ = ["AGGREGATIONS", "INSTRUMENT_TYPES", "ViewRule", "ViewsError", "load_views", "notes", "our_type"]

#: The scope (meter) name our pre-aggregated instruments export under.
OUR_METER = "otel_perf"
INSTRUMENT_TYPES = (
    "counter",
    "up_down_counter",
    "histogram",
    "gauge",
    "observable_counter",
    "observable_up_down_counter",
    "observable_gauge",
)
AGGREGATIONS = (
    "default",
    "drop",
    "sum",
    "last_value",
    "explicit_bucket_histogram",
    "base2_exponential_bucket_histogram",
)
_SELECTOR_KEYS = (
    "instrument_name",
    "instrument_type",
    "unit",
    "meter_name",
    "meter_version",
    "meter_schema_url",
)
_STREAM_KEYS = ("name", "description", "attribute_keys", "aggregation", "aggregation_cardinality_limit")


class ViewsError(ValueError):
    """The views file is missing, unreadable or invalid; the message says where and what to do."""


@dataclass(frozen=True)
class ViewRule:
    """One view: which instruments it selects and what stream it makes of them."""

    where: str
    instrument_name: str | None = None
    instrument_type: str | None = None
    unit: str | None = None
    meter_name: str | None = None
    meter_version: str | None = None
    meter_schema_url: str | None = None
    name: str | None = None
    description: str | None = None
    #: None: every attribute; otherwise only these
    included: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()
    aggregation: str = "default"
    boundaries: tuple[float, ...] | None = None
    max_size: int = DEFAULT_MAX_SIZE
    max_scale: int = DEFAULT_MAX_SCALE
    record_min_max: bool = True
    cardinality_limit: int | None = None

    def matches(self, name: str, kind: str, unit: str, meter: str, version: str = "") -> bool:
        """Whether the selector picks an instrument (names compared case-insensitively, as the SDK)."""
        if self.instrument_name is not None and not fnmatch.fnmatchcase(
            name.lower(), self.instrument_name.lower()
        ):
            return False
        if self.instrument_type is not None and kind != self.instrument_type:
            return False
        if self.unit is not None and unit != self.unit:
            return False
        if self.meter_name is not None and meter != self.meter_name:
            return False
        if self.meter_version is not None and version != self.meter_version:
            return False
        return self.meter_schema_url is None or self.meter_schema_url == ""

    def keeps(self, key: str) -> bool:
        """Whether an attribute survives this view's ``attribute_keys``."""
        if self.included is not None and key not in self.included:
            return False
        return key not in self.excluded

    @property
    def filters_attributes(self) -> bool:
        return self.included is not None or bool(self.excluded)

    def sdk_view(self) -> Any:
        """The SDK ``View`` with the same selector and stream."""
        from opentelemetry.sdk import metrics as sdk_metrics
        from opentelemetry.sdk.metrics import view as sdk_view

        types = {
            "counter": sdk_metrics.Counter,
            "up_down_counter": sdk_metrics.UpDownCounter,
            "histogram": sdk_metrics.Histogram,
            "gauge": getattr(sdk_metrics, "_Gauge", None),
            "observable_counter": sdk_metrics.ObservableCounter,
            "observable_up_down_counter": sdk_metrics.ObservableUpDownCounter,
            "observable_gauge": sdk_metrics.ObservableGauge,
        }
        aggregation: Any = None
        if self.aggregation == "drop":
            aggregation = sdk_view.DropAggregation()
        elif self.aggregation == "sum":
            aggregation = sdk_view.SumAggregation()
        elif self.aggregation == "last_value":
            aggregation = sdk_view.LastValueAggregation()
        elif self.aggregation == "explicit_bucket_histogram":
            aggregation = sdk_view.ExplicitBucketHistogramAggregation(
                boundaries=self.boundaries, record_min_max=self.record_min_max
            )
        elif self.aggregation == "base2_exponential_bucket_histogram":
            aggregation = sdk_view.ExponentialBucketHistogramAggregation(
                max_size=self.max_size, max_scale=self.max_scale
            )
        kwargs: dict[str, Any] = {
            "instrument_type": types[self.instrument_type] if self.instrument_type else None,
            "instrument_name": self.instrument_name,
            "meter_name": self.meter_name,
            "meter_version": self.meter_version,
            "meter_schema_url": self.meter_schema_url,
            "name": self.name,
            "description": self.description,
            "attribute_keys": set(self.included) if self.included is not None else None,
            "aggregation": aggregation,
        }
        if self.unit is not None:
            kwargs["instrument_unit"] = self.unit
        if self.cardinality_limit is not None:
            kwargs["aggregation_cardinality_limit"] = self.cardinality_limit
        return sdk_view.View(**kwargs)


def our_type(inst: fast.Instrument) -> str:
    """The SDK instrument type one of ours stands for (what ``selector.instrument_type`` names)."""
    if isinstance(inst, fast.Histogram):
        return "histogram"
    if isinstance(inst, fast.Counter):
        return "counter" if inst.monotonic else "up_down_counter"
    return "observable_gauge" if inst.callback is not None else "gauge"


def matching(rules: Sequence[ViewRule], inst: fast.Instrument) -> list[ViewRule]:
    kind = our_type(inst)
    return [r for r in rules if r.matches(inst.name, kind, inst.unit, OUR_METER)]


def notes(rules: Sequence[ViewRule], registry: fast.Registry) -> list[str]:
    """What the rules cannot do, to our instruments or the SDK's: one line each, said once at startup."""
    out: list[str] = []
    for rule in rules:
        if rule.excluded:
            out.append(
                f"{rule.where}: attribute_keys.excluded applies to otel-perf's own instruments only; "
                "the SDK's View has no exclusion list, so the SDK's instruments keep those attributes"
            )
    for inst in registry.instruments():
        rules_here = matching(rules, inst)
        kind = our_type(inst)
        bounds = {r.boundaries for r in rules_here if r.aggregation == "explicit_bucket_histogram"}
        if len(bounds) > 1:
            out.append(
                f"{inst.name}: several views give it bucket boundaries; otel-perf keeps one set per "
                "instrument and uses the first view's"
            )
        for rule in rules_here:
            problem = _cannot(rule, kind)
            if problem:
                out.append(
                    f"{rule.where}: {problem} for {inst.name} ({kind}); its default stream is exported"
                )
            if rule.cardinality_limit is not None:
                out.append(
                    f"{rule.where}: aggregation_cardinality_limit does not apply to {inst.name}; "
                    "otel-perf's instruments are bounded by OTEL_PERF_MAX_ROUTES"
                )
    return out


def _cannot(rule: ViewRule, kind: str) -> str:
    """Why ``rule``'s aggregation means nothing for one of our instruments of ``kind`` ("" if it applies)."""
    agg = rule.aggregation
    if agg in ("explicit_bucket_histogram", "base2_exponential_bucket_histogram") and kind != "histogram":
        return f"{agg} needs individual measurements, which otel-perf does not keep"
    if agg == "sum" and kind in ("gauge", "observable_gauge"):
        return "sum of a gauge's values is not kept"
    if agg == "last_value" and kind not in ("gauge", "observable_gauge"):
        return "last_value needs individual measurements, which otel-perf does not keep"
    return ""


def effective_aggregation(rule: ViewRule | None, kind: str) -> str:
    """The aggregation a stream of ours uses: the rule's where it applies, else ``default``."""
    if rule is None or _cannot(rule, kind):
        return "default"
    if rule.aggregation == "last_value" or (rule.aggregation == "sum" and kind != "histogram"):
        return "default"
    return rule.aggregation


# --- parsing -------------------------------------------------------------------------------------


def _text(doc: _Doc, path: tuple[str, ...], value: Any) -> str:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise doc.error(path, f"{value!r} is not a non-empty string.")
    return value


def _mapping(doc: _Doc, path: tuple[str, ...], value: Any, keys: Iterable[str], what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping ({what}), got {value!r}.")
    allowed = tuple(keys)
    for key in value:
        if key not in allowed:
            raise doc.error((*path, key), f"unknown key {key!r}; expected one of {', '.join(allowed)}.")
    return value


def _aggregation(doc: _Doc, path: tuple[str, ...], raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):  # shorthand: aggregation: drop
        raw = {raw: {}}
    agg = _mapping(doc, path, raw, AGGREGATIONS, "one aggregation, e.g. {drop: {}}")
    if len(agg) != 1:
        raise doc.error(path, f"name exactly one aggregation (one of {', '.join(AGGREGATIONS)}).")
    ((name, options),) = agg.items()
    where = (*path, name)
    out: dict[str, Any] = {"aggregation": name}
    if name == "explicit_bucket_histogram":
        opts = _mapping(doc, where, options, ("boundaries", "record_min_max"), "boundaries, record_min_max")
        if "boundaries" in opts:
            bounds = opts["boundaries"]
            if not isinstance(bounds, list) or any(
                isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) for b in bounds
            ):
                raise doc.error((*where, "boundaries"), f"{bounds!r} is not a list of finite numbers.")
            if any(b >= c for b, c in itertools.pairwise(bounds)):
                raise doc.error((*where, "boundaries"), "boundaries must increase strictly.")
            out["boundaries"] = tuple(float(b) for b in bounds)
        else:
            out["boundaries"] = tuple(fast.DURATION_BOUNDS)  # placeholder: replaced per instrument below
            out["default_boundaries"] = True
        out["record_min_max"] = _bool(doc, (*where, "record_min_max"), opts.get("record_min_max", True))
    elif name == "base2_exponential_bucket_histogram":
        opts = _mapping(
            doc,
            where,
            options,
            ("max_size", "max_scale", "record_min_max"),
            "max_size, max_scale, record_min_max",
        )
        out["max_size"] = _int(doc, (*where, "max_size"), opts.get("max_size", DEFAULT_MAX_SIZE), 2, 16384)
        out["max_scale"] = _int(doc, (*where, "max_scale"), opts.get("max_scale", DEFAULT_MAX_SCALE), -10, 20)
        out["record_min_max"] = _bool(doc, (*where, "record_min_max"), opts.get("record_min_max", True))
    else:
        _mapping(doc, where, options, (), "no options")
    return out


def _bool(doc: _Doc, path: tuple[str, ...], value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(path, f"{value!r} is not true or false.")
    return value


def _int(doc: _Doc, path: tuple[str, ...], value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise doc.error(path, f"{value!r} is not a whole number from {low} to {high}.")
    return value


def _keys(doc: _Doc, path: tuple[str, ...], value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise doc.error(path, f"expected a list of attribute names, got {value!r}.")
    return frozenset(_text(doc, (*path, str(i)), v) for i, v in enumerate(value))


def _rule(doc: _Doc, path: tuple[str, ...], raw: Any) -> ViewRule:
    entry = _mapping(doc, path, raw, ("selector", "stream"), "selector and stream")
    selector = _mapping(
        doc, (*path, "selector"), entry.get("selector"), _SELECTOR_KEYS, "what the view selects"
    )
    stream = _mapping(doc, (*path, "stream"), entry.get("stream"), _STREAM_KEYS, "what the view makes of it")
    line = doc.lines.get(path)
    fields: dict[str, Any] = {"where": f"{doc.source}:{line}" if line else doc.source}
    for key in _SELECTOR_KEYS:
        if selector.get(key) is not None:
            fields[key] = _text(doc, (*path, "selector", key), selector[key])
    if not any(k in fields for k in _SELECTOR_KEYS):
        raise doc.error(
            (*path, "selector"), "a view needs a selector (instrument_name: '*' selects everything)."
        )
    kind = fields.get("instrument_type")
    if kind is not None and kind not in INSTRUMENT_TYPES:
        raise doc.error(
            (*path, "selector", "instrument_type"),
            f"unknown instrument type {kind!r}; expected one of {', '.join(INSTRUMENT_TYPES)}.",
        )
    for key in ("name", "description"):
        if stream.get(key) is not None:
            fields[key] = _text(doc, (*path, "stream", key), stream[key])
    name_glob = fields.get("instrument_name", "*")
    if "name" in fields and any(c in name_glob for c in "*?["):
        raise doc.error(
            (*path, "stream", "name"),
            "a view that renames must select one instrument by its exact "
            "name (no wildcard in selector.instrument_name); otherwise every match gets the same name.",
        )
    keys = stream.get("attribute_keys")
    if keys is not None:
        where = (*path, "stream", "attribute_keys")
        if isinstance(keys, list):  # shorthand: the included list
            fields["included"] = _keys(doc, where, keys)
        else:
            spec = _mapping(doc, where, keys, ("included", "excluded"), "included and/or excluded lists")
            if spec.get("included") is not None:
                fields["included"] = _keys(doc, (*where, "included"), spec["included"])
            if spec.get("excluded") is not None:
                fields["excluded"] = _keys(doc, (*where, "excluded"), spec["excluded"])
    if stream.get("aggregation") is not None:
        agg = _aggregation(doc, (*path, "stream", "aggregation"), stream["aggregation"])
        if agg.pop("default_boundaries", False):
            agg.pop("boundaries")
        fields.update(agg)
    if stream.get("aggregation_cardinality_limit") is not None:
        fields["cardinality_limit"] = _int(
            doc,
            (*path, "stream", "aggregation_cardinality_limit"),
            stream["aggregation_cardinality_limit"],
            1,
            10_000_000,
        )
    return ViewRule(**fields)


def parse_views(text: str, source: str = "<views>") -> list[ViewRule]:
    """Validate a views document (``views:`` or a declarative configuration's ``meter_provider.views``)."""
    from otel_perf._analysis.budgets import _Doc  # the document reader: only when views are configured

    doc = _Doc(source, ViewsError)
    data = doc.parse(text, "expected `views:` with a list of views (see the README, Metric views).")
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping with `views:` (or `meter_provider: {views: ...}`).")
    if "meter_provider" in data:
        provider = data["meter_provider"]
        if not isinstance(provider, dict):
            raise doc.error(("meter_provider",), "expected a mapping.")
        path: tuple[str, ...] = ("meter_provider", "views")
        views = provider.get("views")
    else:
        unknown = [k for k in data if k not in ("views", "file_format")]
        if unknown:
            raise doc.error(
                (unknown[0],),
                f"unknown key {unknown[0]!r}; expected `views:` (or a declarative "
                "configuration file with `meter_provider:`).",
            )
        path = ("views",)
        views = data.get("views")
    if views is None:
        return []
    if not isinstance(views, list):
        raise doc.error(path, "expected a list of views (each with selector: and stream:).")
    return [_rule(doc, (*path, str(i)), raw) for i, raw in enumerate(views)]


def load_views(path: str) -> list[ViewRule]:
    """Read and validate the views file at ``path``; :class:`ViewsError` says what is wrong."""
    from otel_perf._analysis.budgets import _read_text

    name, text = _read_text(path, ViewsError, "views", "OTEL_PERF_METRIC_VIEWS")
    return parse_views(text, name)
