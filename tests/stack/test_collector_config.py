"""Structural checks of the collector configs (no collector binary can run here).

Configs are loaded the way otelcol-contrib loads several --config files: maps merged key by
key, lists replaced. Component names are those of the target release, otelcol-contrib 0.155.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from . import COLLECTOR_DIR, load_yaml

TARGET_RELEASE = "0.155.0"

# Component types used here, as otelcol-contrib 0.155.0 registers them.
KNOWN_TYPES: dict[str, set[str]] = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch", "resource_detection", "tail_sampling", "delta_to_cumulative"},
    "exporters": {"otlp_grpc", "otlp_http", "prometheus", "load_balancing", "debug"},
    "connectors": {"span_metrics"},
    "extensions": {"health_check", "file_storage", "bearertokenauth", "pprof", "zpages"},
}
# Old names that are only deprecated aliases in the target release.
DEPRECATED: dict[str, dict[str, str]] = {
    "exporters": {
        "otlp": "otlp_grpc",
        "otlphttp": "otlp_http",
        "loadbalancing": "load_balancing",
        "prometheusremotewrite": "prometheus_remote_write",
    },
    "connectors": {"spanmetrics": "span_metrics"},
    "processors": {"resourcedetection": "resource_detection", "deltatocumulative": "delta_to_cumulative"},
}
# Connector type -> (pipeline type it exports from, pipeline type it receives into).
CONNECTOR_SIGNALS = {"span_metrics": ("traces", "metrics")}
SAMPLERS = {"tail_sampling", "probabilistic_sampler"}
PUSH_EXPORTERS = {"otlp_grpc", "otlp_http", "load_balancing"}

# name -> the --config files the collector is started with.
CONFIGS: dict[str, tuple[str, ...]] = {
    "agent": ("agent.yaml",),
    "agent+gateway-overlay": ("agent.yaml", "agent-to-gateway.yaml"),
    "gateway": ("gateway.yaml",),
}
STANDALONE = ("agent", "gateway")


def merge(base: Any, overlay: Any) -> Any:
    """The collector's merge of several config files: maps deep-merged, everything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return overlay


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for file in CONFIGS[name]:
        config = merge(config, load_yaml(COLLECTOR_DIR / file))
    return config


def ctype(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    result: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    return result


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf and map in a config."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


@pytest.fixture(params=list(CONFIGS))
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_component_names_match_target_release(config: dict[str, Any]) -> None:
    for kind, known in KNOWN_TYPES.items():
        for component_id in config.get(kind) or {}:
            kind_type = ctype(component_id)
            renamed = DEPRECATED.get(kind, {}).get(kind_type)
            assert renamed is None, f"{kind}: {component_id} is a deprecated alias, use {renamed}"
            assert kind_type in known, f"{kind}: {component_id} is not a component this stack targets"


def test_every_pipeline_component_is_defined(config: dict[str, Any]) -> None:
    connectors = set(config.get("connectors") or {})
    for name, pipeline in pipelines(config).items():
        assert ctype(name) in {"traces", "metrics", "logs"}, name
        assert pipeline.get("receivers"), name
        assert pipeline.get("exporters"), name
        for receiver in pipeline["receivers"]:
            assert receiver in (config.get("receivers") or {}) or receiver in connectors, (name, receiver)
        for processor in pipeline.get("processors", []):
            assert processor in (config.get("processors") or {}), (name, processor)
        for exporter in pipeline["exporters"]:
            assert exporter in (config.get("exporters") or {}) or exporter in connectors, (name, exporter)


@pytest.mark.parametrize("name", STANDALONE)
def test_standalone_configs_define_nothing_unused(name: str) -> None:
    config = load(name)
    used = {
        component
        for pipeline in pipelines(config).values()
        for role in ("receivers", "processors", "exporters")
        for component in pipeline.get(role, [])
    }
    for kind in ("receivers", "processors", "exporters", "connectors"):
        unused = set(config.get(kind) or {}) - used
        assert unused == set(), f"{name}: unused {kind}"


def test_connectors_sit_on_both_sides(config: dict[str, Any]) -> None:
    for connector in config.get("connectors") or {}:
        exported_from = {p for p, spec in pipelines(config).items() if connector in spec["exporters"]}
        received_in = {p for p, spec in pipelines(config).items() if connector in spec["receivers"]}
        assert exported_from, f"{connector} must be an exporter of some pipeline"
        assert received_in, f"{connector} must be a receiver of some pipeline"
        source, target = CONNECTOR_SIGNALS[ctype(connector)]
        assert all(ctype(p) == source for p in exported_from), (connector, exported_from)
        assert all(ctype(p) == target for p in received_in), (connector, received_in)


def test_extensions_are_defined_and_enabled(config: dict[str, Any]) -> None:
    defined = set(config.get("extensions") or {})
    enabled = list(config["service"].get("extensions", []))
    assert len(enabled) == len(set(enabled))
    assert set(enabled) <= defined
    assert any(ctype(e) == "health_check" for e in enabled)
    # Extensions referenced by components (queue storage, authenticators) must be enabled.
    for path, value in walk({k: config.get(k) for k in ("receivers", "exporters")}):
        if path.endswith((".storage", ".authenticator")):
            assert value in enabled, f"{path} -> {value} is not in service.extensions"


def test_memory_limiter_comes_first(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        processors = pipeline.get("processors", [])
        assert processors, name
        assert ctype(processors[0]) == "memory_limiter", name


def test_batch_comes_last(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        processors = pipeline.get("processors", [])
        assert ctype(processors[-1]) == "batch", name


def test_red_metrics_are_taken_before_sampling(config: dict[str, Any]) -> None:
    """No span_metrics connector is fed by a pipeline that samples (or that is fed by one)."""
    sampled: set[str] = set()
    changed = True
    while changed:  # propagate "downstream of a sampler" through connectors
        changed = False
        for name, spec in pipelines(config).items():
            if name in sampled:
                continue
            has_sampler = any(ctype(p) in SAMPLERS for p in spec.get("processors", []))
            fed_by_sampled = any(
                r in (config.get("connectors") or {}) and r in pipelines(config)[p]["exporters"]
                for r in spec["receivers"]
                for p in sampled
            )
            if has_sampler or fed_by_sampled:
                sampled.add(name)
                changed = True
    for name in sampled:
        exporters = pipelines(config)[name]["exporters"]
        assert not any(ctype(e) == "span_metrics" for e in exporters), f"{name} samples before span_metrics"


@pytest.mark.parametrize("name", ["agent", "agent+gateway-overlay"])
def test_agent_takes_red_metrics_from_every_span(name: str) -> None:
    config = load(name)
    traces = pipelines(config)["traces"]
    assert "span_metrics" in traces["exporters"]
    assert "span_metrics" in pipelines(config)["metrics"]["receivers"]
    span_metrics = config["connectors"]["span_metrics"]
    assert span_metrics["exemplars"]["enabled"] is True
    assert span_metrics["histogram"]["unit"] == "s"
    assert span_metrics["namespace"] == "traces.span.metrics"


def test_push_exporters_queue_on_disk_and_retry(config: dict[str, Any]) -> None:
    """A backend restart loses nothing: persistent queue + retries that never give up."""
    storages = {e for e in config.get("extensions") or {} if ctype(e) == "file_storage"}
    used = {e for spec in pipelines(config).values() for e in spec["exporters"]}
    for exporter_id in used:
        if ctype(exporter_id) not in PUSH_EXPORTERS:
            continue
        exporter = config["exporters"][exporter_id]
        queue = exporter.get("sending_queue", {})
        assert queue.get("enabled") is True, exporter_id
        assert queue.get("storage") in storages, f"{exporter_id}: sending_queue must use file_storage"
        retry = exporter.get("retry_on_failure", {})
        assert retry.get("enabled") is True, exporter_id
        assert retry.get("max_elapsed_time") == 0, f"{exporter_id}: retries must not give up"


ENV_REF = re.compile(r"\$\{([^}]*)\}")
ENV_FORM = re.compile(r"env:[A-Z][A-Z0-9_]*(:-[^}]*)?")


def _env_refs(file: str) -> list[str]:
    """Every ${...} in the string values of a config file (comments do not count)."""
    return [
        ref
        for _, value in walk(load_yaml(COLLECTOR_DIR / file))
        if isinstance(value, str)
        for ref in ENV_REF.findall(value)
    ]


@pytest.mark.parametrize("file", sorted(p.name for p in COLLECTOR_DIR.glob("*.yaml")))
def test_env_references_are_well_formed(file: str) -> None:
    for ref in _env_refs(file):
        assert ENV_FORM.fullmatch(ref), f"{file}: ${{{ref}}} is not ${{env:NAME}} or ${{env:NAME:-default}}"
    for path, value in walk(load_yaml(COLLECTOR_DIR / file)):
        if isinstance(value, str):
            # Only ${env:...} is expanded; any other '$' would reach the component verbatim.
            assert "$" not in ENV_REF.sub("", value), f"{file}: stray '$' in {path}"


def test_endpoints_and_secrets_come_from_env(config: dict[str, Any]) -> None:
    for path, value in walk(config):
        leaf = path.rsplit(".", 1)[-1]
        if leaf in {"token", "endpoint", "hostname", "ca_file", "cert_file", "key_file"} and isinstance(
            value, str
        ):
            if path.startswith("extensions.pprof"):
                continue  # debug endpoint, bound to localhost on purpose
            assert value.startswith("${env:"), f"{path} = {value!r} should come from ${{env:...}}"
        if leaf == "token":
            assert ":-" not in value, f"{path}: a secret must have no default"


def test_agent_otlp_receiver_grpc_http_with_cors() -> None:
    otlp = load("agent")["receivers"]["otlp"]["protocols"]
    assert {"grpc", "http"} <= set(otlp)
    cors = otlp["http"]["cors"]
    assert cors["allowed_origins"], "browser telemetry needs allowed origins"
    # Browser telemetry: every allowed origin comes from the environment, none is a bare '*'.
    for origin in cors["allowed_origins"]:
        assert ENV_FORM.fullmatch(origin[2:-1]), origin
        assert origin.startswith("${env:OTELCOL_CORS_ALLOWED_ORIGIN"), origin
        assert not origin.endswith(":-*}"), origin
    # The browser script's fetch/XHR calls carry traceparent to the app, not to the collector;
    # what the collector must allow is the script's Content-Type (implicitly allowed) from those origins.
    assert {"traceparent", "tracestate"} <= set(cors["allowed_headers"])


@pytest.mark.parametrize("name", ["agent", "agent+gateway-overlay"])
def test_browser_telemetry_is_routed_like_the_servers(name: str) -> None:
    config = load(name)
    lines = pipelines(config)
    # Browser spans arrive on the same otlp receiver, so they take the server's traces pipeline.
    assert "otlp" in lines["traces"]["receivers"]
    # Browser histograms are delta: summed into cumulative series before the prometheus exporter.
    metrics = lines["metrics"]
    assert "prometheus" in metrics["exporters"]
    processors = metrics["processors"]
    assert "delta_to_cumulative" in processors
    assert processors.index("delta_to_cumulative") < processors.index("batch")
    assert config["processors"]["delta_to_cumulative"]["max_stale"]


def test_agent_exports_to_tempo_prometheus_loki() -> None:
    config = load("agent")
    by_signal = {name: spec["exporters"] for name, spec in pipelines(config).items()}
    assert "otlp_grpc/tempo" in by_signal["traces"]
    assert by_signal["metrics"] == ["prometheus"]
    assert "otlp_http/loki" in by_signal["logs"]
    prometheus = config["exporters"]["prometheus"]
    assert prometheus["enable_open_metrics"] is True, "exemplars are only exposed in OpenMetrics"
    assert "/otlp" in config["exporters"]["otlp_http/loki"]["endpoint"]


def test_gateway_overlay_load_balances_by_trace_id_over_tls_with_token() -> None:
    config = load("agent+gateway-overlay")
    assert pipelines(config)["traces"]["exporters"] == ["span_metrics", "load_balancing/gateway"]
    lb = config["exporters"]["load_balancing/gateway"]
    assert lb["routing_key"] == "traceID"
    assert set(lb["resolver"]) == {"dns"}
    otlp = lb["protocol"]["otlp"]
    assert "endpoint" not in otlp, "the load balancer fills the endpoint per backend"
    assert otlp["tls"].get("ca_file")
    assert not otlp["tls"].get("insecure")
    authenticator = otlp["auth"]["authenticator"]
    assert ctype(authenticator) == "bearertokenauth"
    assert authenticator in config["service"]["extensions"]


def test_gateway_requires_tls_and_bearer_token() -> None:
    config = load("gateway")
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]
    assert grpc["tls"]["cert_file"]
    assert grpc["tls"]["key_file"]
    assert ctype(grpc["auth"]["authenticator"]) == "bearertokenauth"
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc"}, "no unauthenticated listener"


def test_gateway_tail_sampling_policies() -> None:
    config = load("gateway")
    assert pipelines(config)["traces"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"].startswith("${env:")
    assert policies["probabilistic"]["probabilistic"]["sampling_percentage"].startswith("${env:")
    assert "span_metrics" not in (config.get("connectors") or {}), "RED metrics are taken on the agents"


def test_self_telemetry_exposed(config: dict[str, Any]) -> None:
    readers = config["service"]["telemetry"]["metrics"]["readers"]
    ports = [r["pull"]["exporter"]["prometheus"]["port"] for r in readers]
    assert ports == [8888]


def test_readme_documents_files_release_and_env_vars() -> None:
    readme = (COLLECTOR_DIR / "README.md").read_text()
    assert TARGET_RELEASE in readme
    for path in sorted(COLLECTOR_DIR.glob("*.yaml")):
        assert f"`{path.name}`" in readme, path.name
        for ref in _env_refs(path.name):
            name = ref.split(":")[1]
            assert f"`{name}`" in readme, f"{name} (used in {path.name}) is not documented"
    for kind, renames in DEPRECATED.items():
        for old, new in renames.items():
            assert f"`{new}`" in readme, f"README should name {kind} {new} (was {old})"
