"""``otel-perf config``: the effective configuration, where each value came from, the
instrumentations that would be loaded or skipped here and why, and whether the configured
OTLP endpoint answers."""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import time
from urllib.parse import urlsplit

from otel_perf._cli.flags import add_setting_flags, apply_flags
from otel_perf._config import Config, describe, load, markdown_table

NAME = "config"
HELP = (
    "Print the effective configuration, the source of every value, the instrumentations loaded and "
    "skipped here, and check the OTLP endpoint."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print the README env-var table and exit")
    parser.add_argument("--no-check", action="store_true", help="do not contact the OTLP endpoint")
    add_setting_flags(parser)


def check_endpoint(
    endpoint: str, protocol: str, timeout: float = 2.0, *, signal_url: bool = False
) -> tuple[bool, str]:
    """Does something answer OTLP at ``endpoint``?  (ok, human description)

    ``signal_url``: ``endpoint`` is a per-signal URL (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
    used as is; otherwise ``/v1/traces`` is appended, as the exporters do.
    """
    if "://" not in endpoint:  # gRPC's host:port
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    host = parts.hostname or "localhost"
    port = parts.port or (4317 if protocol == "grpc" else (443 if parts.scheme == "https" else 4318))
    start = time.perf_counter()
    if protocol == "grpc":
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            return False, f"does not answer: {host}:{port}: {exc.strerror or exc}"
        return True, f"accepts connections on {host}:{port} ({(time.perf_counter() - start) * 1000:.0f} ms)"
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(host, port, timeout=timeout)
    path = parts.path or "/" if signal_url else parts.path.rstrip("/") + "/v1/traces"
    try:
        # An empty ExportTraceServiceRequest is a valid, harmless OTLP request.
        conn.request("POST", path, body=b"", headers={"Content-Type": "application/x-protobuf"})
        status = conn.getresponse().status
    except OSError as exc:
        return False, f"does not answer: {endpoint}: {exc.strerror or exc}"
    finally:
        conn.close()
    took = (time.perf_counter() - start) * 1000
    if 200 <= status < 300:
        return True, f"answers: POST {path} -> HTTP {status} in {took:.0f} ms"
    return False, f"reachable but POST {path} -> HTTP {status} (is this an OTLP/HTTP receiver?)"


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    env = dict(os.environ)
    apply_flags(args, env)
    config = load(env)
    rows = describe(config)
    width = max(len(r[0]) for r in rows)
    print(f"{'variable':<{width}}  {'source':<7}  value")
    for var, value, source in rows:
        print(f"{var:<{width}}  {source:<7}  {value}")
    for problem in config.problems:
        print(f"warning: {problem.message()}")
    print()
    print(instrumentations_table(config))
    if not args.no_check and "otlp" in (
        *config.items("OTEL_TRACES_EXPORTER"),
        *config.items("OTEL_METRICS_EXPORTER"),
        *config.items("OTEL_LOGS_EXPORTER"),
    ):
        specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        endpoint = specific or config.text("OTEL_EXPORTER_OTLP_ENDPOINT")
        protocol = config.text("OTEL_EXPORTER_OTLP_PROTOCOL")
        _ok, text = check_endpoint(endpoint, protocol, signal_url=bool(specific))
        print(f"\nOTLP endpoint {endpoint} {text}")
    return 1 if (config.strict and config.problems) else 0


#: plan() state -> what the table says
_VERDICT = {"active": "loaded", "waiting": "loaded"}


def instrumentations_table(config: Config) -> str:
    """Every instrumentation, ours and the official ones installed: loaded or skipped, and why."""
    from otel_perf._integrations import BY_NAME
    from otel_perf._setup import integrations

    rows: list[tuple[str, str, str, str]] = []
    for status in integrations.plan(integrations.disabled_by(config)):
        if status.source == "ours":
            row = BY_NAME[status.name]
            by = f"ours ({row.library} {status.version})" if row.library and status.version else "ours"
            why = status.detail if status.state == "active" else _why(status)
        else:
            by = f"{status.source} {status.version}".strip()
            why = _why(status) if status.state != "active" else "official instrumentation"
        rows.append((status.name, _VERDICT.get(status.state, "skipped"), by, why))
    widths = [max(len(r[i]) for r in (("instrumentation", "state", "by", ""), *rows)) for i in range(3)]
    lines = [
        "instrumentations (switch any off with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS; "
        "`otel-perf instrumentations` lists what to install):",
        f"{'instrumentation':<{widths[0]}}  {'state':<{widths[1]}}  {'by':<{widths[2]}}  what / why",
    ]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    other = other_distros()
    if other:
        lines.append(
            f"\nnote: other OpenTelemetry distros or configurators are installed ({', '.join(other)}): "
            "`opentelemetry-instrument` takes whichever it finds first, so under it set "
            "OTEL_PYTHON_DISTRO=otel_perf and OTEL_PYTHON_CONFIGURATOR=otel_perf (otel-perf-instrument "
            "needs neither)"
        )
    return "\n".join(lines)


def other_distros() -> list[str]:
    """Entry-point names of distros/configurators not ours (``opentelemetry-instrument`` picks the
    first it finds when ``OTEL_PYTHON_DISTRO``/``_CONFIGURATOR`` are unset)."""
    from importlib.metadata import entry_points

    env = os.environ
    found: list[str] = []
    for group, var in (("opentelemetry_distro", "OTEL_PYTHON_DISTRO"),
                       ("opentelemetry_configurator", "OTEL_PYTHON_CONFIGURATOR")):
        if env.get(var, "").strip() == "otel_perf":
            continue
        found += [f"{group.rsplit('_', 1)[1]} '{ep.name}'" for ep in entry_points(group=group)
                  if ep.name != "otel_perf"]
    return found


def _why(status: object) -> str:
    state = getattr(status, "state", "")
    detail = getattr(status, "detail", "")
    if state == "replaced":
        return f"replaced: {detail}"
    if state == "disabled":
        return f"disabled by {detail}"
    if state == "missing":
        return f"library missing or unsupported: {detail}"
    return f"{state}: {detail}" if detail else state
