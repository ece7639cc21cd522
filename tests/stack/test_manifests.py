"""compose.yaml against the compose specification, Kubernetes manifests against the Kubernetes
schemas (both validators ship their schemas, so this runs offline), and the wiring between files.

Validators: check-jsonschema (vendored compose-spec schema), kubernetes-validate (PyPI).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from . import COLLECTOR_DIR, DEPLOY_DIR, ROOT, load_script, load_yaml, load_yaml_all, require_module, run

COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
K8S_DIR = DEPLOY_DIR / "k8s"
K8S_FILES = sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.155.0"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in K8S_FILES for doc in load_yaml_all(path)]


def k8s_by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc["kind"] == kind}


# --- compose ------------------------------------------------------------------------------
def test_compose_validates_against_compose_spec() -> None:
    require_module("check_jsonschema", "check-jsonschema")
    result = run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_stack() -> None:
    services = compose()["services"]
    for name in ("collector", "tempo", "prometheus", "loki", "grafana", "demo", "loadgen", "alertmanager"):
        assert name in services, name
    assert compose()["name"] == "otel-perf-instrument"


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: pin a tag"
        assert not image.endswith(":latest"), name
    assert compose()["services"]["collector"]["image"] == COLLECTOR_IMAGE


def test_compose_bind_mounts_and_build_context_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY_DIR / source).exists(), f"{name}: {source} missing"
        build = service.get("build")
        if build:
            context = DEPLOY_DIR / build["context"]
            assert (context / build["dockerfile"]).is_file(), name


def test_compose_collector_runs_the_shipped_agent_config() -> None:
    collector = compose()["services"]["collector"]
    assert "../collector-config:/etc/otelcol:ro" in collector["volumes"]
    configs = [arg.split("=", 1)[1] for arg in collector["command"] if arg.startswith("--config=")]
    assert configs == ["/etc/otelcol/agent.yaml"]
    for config in configs:
        assert (COLLECTOR_DIR / Path(config).name).is_file()
    assert "collector-queue:/var/lib/otelcol/queue" in collector["volumes"]


def test_compose_prometheus_keeps_exemplars_and_accepts_remote_write() -> None:
    command = compose()["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--web.enable-remote-write-receiver" in command  # Tempo's service-graph metrics


def test_compose_demo_app_configuration() -> None:
    demo = compose()["services"]["demo"]
    env = demo["environment"]
    assert env["OTEL_SERVICE_NAME"] == "otel-perf-demo"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_PERF_BUDGETS"] == "/app/deploy/perf-budgets.yaml"
    assert (ROOT / "deploy" / "perf-budgets.yaml").is_file()
    assert demo["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_dockerfile_installs_demo_extra_and_runs_under_the_launcher() -> None:
    text = (DEPLOY_DIR / "Dockerfile").read_text()
    assert re.search(r'pip install "/app\[demo\]"', text)
    cmd = (
        'CMD ["otel-perf-instrument", "uvicorn", "otel_perf._demo.app:app", '
        '"--host", "0.0.0.0", "--port", "8000"]'
    )
    assert cmd in text
    ignore = (DEPLOY_DIR / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore
    assert ".git" in ignore


def test_perf_budgets_example_has_the_agreed_shape() -> None:
    budgets = load_yaml(DEPLOY_DIR / "perf-budgets.yaml")
    assert budgets["version"] == 1
    assert {"p95_ms", "p99_ms", "error_rate"} <= set(budgets["defaults"])
    assert set(budgets["defaults"]) <= {"p95_ms", "p99_ms", "error_rate", "client_error_rate",
                                        "queries_per_request", "critical"}  # fmt: skip
    for key, route in budgets["routes"].items():
        assert re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /\S*", key), key
        assert set(route) <= {"p50_ms", "p95_ms", "p99_ms", "error_rate", "queries_per_request", "tier"}, key
        assert route["p50_ms"] <= route["p95_ms"] <= route["p99_ms"], key
        assert 0 <= route["error_rate"] < 1, key


def test_perf_budgets_example_loads_with_the_project_parser() -> None:
    from otel_perf._analysis.budgets import load_budgets

    budgets = load_budgets(str(DEPLOY_DIR / "perf-budgets.yaml"))
    detail = budgets.lookup("GET", "/api/v1/appointments/{appointment_id}")
    assert detail is not None
    assert detail.p95_ms == 80


# --- kubernetes ---------------------------------------------------------------------------
def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    require_module("kubernetes_validate", "kubernetes-validate")
    from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

    version = kv.latest_version()
    errors = []
    for path, doc in k8s_docs():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert errors == []


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    resources = load_yaml(K8S_DIR / "kustomization.yaml")["resources"]
    expected = sorted(p.name for p in K8S_FILES if ".example." not in p.name)
    assert sorted(resources) == expected


def test_configmaps_carry_the_shipped_files_verbatim() -> None:
    builder = load_script(K8S_DIR / "build_configmaps.py")
    assert (K8S_DIR / "configmaps.yaml").read_text() == builder.render(), (
        "deploy/k8s/configmaps.yaml is stale: run python deploy/k8s/build_configmaps.py"
    )
    maps = k8s_by_kind("ConfigMap")
    assert maps["otel-agent-config"]["data"]["agent.yaml"] == (COLLECTOR_DIR / "agent.yaml").read_text()
    assert maps["otel-gateway-config"]["data"]["gateway.yaml"] == (COLLECTOR_DIR / "gateway.yaml").read_text()


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    ("kind", "name", "configs"),
    [
        ("DaemonSet", "otel-agent", ["agent.yaml", "agent-to-gateway.yaml"]),
        ("Deployment", "otel-gateway", ["gateway.yaml"]),
    ],
)
def test_collectors_run_the_configs_they_mount(kind: str, name: str, configs: list[str]) -> None:
    workload = k8s_by_kind(kind)[name]
    spec = _pod_spec(workload)
    container = spec["containers"][0]
    assert container["image"] == COLLECTOR_IMAGE
    mounted = [f.split("/")[-1] for f in container["args"] if f.startswith("--config=")]
    assert mounted == configs
    config_volume = next(v for v in spec["volumes"] if v["name"] == "config")
    data = k8s_by_kind("ConfigMap")[config_volume["configMap"]["name"]]["data"]
    assert set(configs) <= set(data)
    assert spec["serviceAccountName"] in k8s_by_kind("ServiceAccount")
    # Every ${env:NAME} without a default in the configs is set on the container.
    env = {e["name"] for e in container["env"]}
    for config in configs:
        for var in re.findall(r"\$\{env:([A-Z0-9_]+)\}", data[config]):
            assert var in env, f"{name}: {var} has no default and is not set"
    # The persistent queue is a volume, not the container's (read-only) root filesystem.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/otelcol/queue" in mounts


def test_services_select_existing_pods() -> None:
    pod_labels = [
        _pod_spec_labels(doc) for _, doc in k8s_docs() if doc["kind"] in {"Deployment", "DaemonSet"}
    ]
    for name, service in k8s_by_kind("Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


def _pod_spec_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_gateway_reachable_by_dns_resolver_and_tls_name() -> None:
    services = k8s_by_kind("Service")
    assert services["otel-gateway-headless"]["spec"]["clusterIP"] == "None"
    agent_env = {
        e["name"]: e.get("value")
        for e in _pod_spec(k8s_by_kind("DaemonSet")["otel-agent"])["containers"][0]["env"]
    }
    assert agent_env["OTELCOL_GATEWAY_HOSTNAME"].startswith("otel-gateway-headless.otel-perf.")
    assert agent_env["OTELCOL_GATEWAY_TLS_SERVER_NAME"].startswith("otel-gateway.otel-perf.")
    assert services["otel-agent"]["spec"]["internalTrafficPolicy"] == "Local"


def test_example_app_is_configured_by_env_only() -> None:
    app = k8s_by_kind("Deployment")["otel-perf-demo"]
    container = _pod_spec(app)["containers"][0]
    assert "command" not in container
    assert "args" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_SERVICE_NAME"] == "otel-perf-demo"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-agent.otel-perf.svc.cluster.local:4318"
    assert env["OTEL_PERF_BUDGETS"].endswith("/perf-budgets.yaml")
    assert "memory" in container["resources"]["limits"], "the memory alert reads the cgroup limit"


# --- README -------------------------------------------------------------------------------
def test_deploy_readme_documents_files_ports_and_env() -> None:
    readme = (DEPLOY_DIR / "README.md").read_text()
    assert "docker compose up" in readme
    for path in sorted(DEPLOY_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            rel = path.relative_to(DEPLOY_DIR).as_posix()
            assert f"`{rel}`" in readme, f"deploy/README.md does not describe {rel}"
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.split(":")[0] in readme, f"{name}: port {port}"
        for var in service.get("environment", {}):
            assert f"`{var}`" in readme, f"{name}: {var}"


def test_deploy_readme_lists_every_alert() -> None:
    readme = (DEPLOY_DIR / "README.md").read_text()
    table = readme.split("## Metrics and alerts", 1)[1].split("\n## ", 1)[0]
    rules = load_yaml(DEPLOY_DIR / "prometheus" / "rules" / "perf-alerts.yml")
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    assert alerts, "no alerts found"
    for alert in sorted(alerts):
        assert f"`{alert}`" in table, f"deploy/README.md's alert table lacks {alert}"
