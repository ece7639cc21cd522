"""``otel-perf config``: the effective configuration, where each value came from, and
whether the configured OTLP endpoint answers."""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import time
from urllib.parse import urlsplit

from otel_perf._cli.flags import add_setting_flags, apply_flags
from otel_perf._config import describe, load, markdown_table

NAME = "config"
HELP = "Print the effective configuration, the source of every value, and check the OTLP endpoint."


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
