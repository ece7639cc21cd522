"""What each benchmark configuration records: spans per request, their names, metrics, logs.

    bench/.venvs/ours/bin/python bench/census.py            # every app and configuration
    bench/.venvs/ours/bin/python bench/census.py --apps fastapi --configs stock,ddtrace

Starts each configuration's server as ``run.py`` does (same venvs, launchers and variables),
with the sink keeping every body it receives (``sink.py --keep``); sends ``--requests``
requests to each endpoint; waits ``--settle`` seconds (periodic exports run), stops the
server and decodes what arrived: OTLP/protobuf traces, metrics and logs, and ddtrace's
msgpack trace payloads.  A request's spans are the spans of its trace; a trace is given to
the endpoint whose path appears in one of its span names or string attributes.  Not a
timing: run it on its own (it needs ``opentelemetry-proto``, which ``bench/.venvs/ours``
has).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run

PATHS = {"/hello": "/hello", "/items/42": "/items/", "/db": "/db"}


# --- ddtrace's payloads (msgpack; decoded here to need no extra package) -------------------


def _unpack(data: bytes, pos: int = 0) -> tuple[Any, int]:
    b = data[pos]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F:
        return _map(data, pos, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _array(data, pos, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return data[pos : pos + n].decode("utf-8", "replace"), pos + n
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if b in fixed:
        return fixed[b], pos
    sizes = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
    sizes |= {0xCA: ">f", 0xCB: ">d"}
    if b in sizes:
        fmt = sizes[b]
        return struct.unpack_from(fmt, data, pos)[0], pos + struct.calcsize(fmt)
    lengths = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I", 0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
    if b in lengths:
        fmt = lengths[b]
        n = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        raw = data[pos : pos + n]
        return (raw if b >= 0xC4 and b <= 0xC6 else raw.decode("utf-8", "replace")), pos + n
    counts = {0xDC: (">H", _array), 0xDD: (">I", _array), 0xDE: (">H", _map), 0xDF: (">I", _map)}
    if b in counts:
        fmt, read = counts[b]
        n = struct.unpack_from(fmt, data, pos)[0]
        return read(data, pos + struct.calcsize(fmt), n)
    raise ValueError(f"msgpack type 0x{b:02x} not handled")


def _array(data: bytes, pos: int, n: int) -> tuple[list[Any], int]:
    out = []
    for _ in range(n):
        item, pos = _unpack(data, pos)
        out.append(item)
    return out, pos


def _map(data: bytes, pos: int, n: int) -> tuple[dict[Any, Any], int]:
    out = {}
    for _ in range(n):
        key, pos = _unpack(data, pos)
        out[key], pos = _unpack(data, pos)
    return out, pos


def datadog_traces(body: bytes) -> list[list[tuple[str, list[str]]]]:
    """Traces as lists of (span name, its strings), from a v0.4 or v0.5 payload."""
    payload, _ = _unpack(body)
    out = []
    if len(payload) == 2 and isinstance(payload[0], list) and all(isinstance(s, str) for s in payload[0]):
        table, traces = payload  # v0.5: [string table, [[span array, ...], ...]]
        for trace in traces:
            spans = []
            for span in trace:
                meta = span[9]
                strings = [table[span[2]], *(table[k] + "=" + table[v] for k, v in meta.items())]
                spans.append((table[span[1]], strings))
            out.append(spans)
    else:  # v0.4: [[{name, resource, meta, ...}, ...], ...]
        for trace in payload:
            spans = []
            for span in trace:
                meta = span.get("meta", {})
                spans.append(
                    (span["name"], [span.get("resource", ""), *(f"{k}={v}" for k, v in meta.items())])
                )
            out.append(spans)
    return out


# --- OTLP ---------------------------------------------------------------------------------


def otlp_traces(body: bytes) -> list[list[tuple[str, list[str]]]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(body)
    by_trace: dict[bytes, list[tuple[str, list[str]]]] = collections.defaultdict(list)
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                strings = [a.value.string_value for a in span.attributes if a.value.HasField("string_value")]
                by_trace[span.trace_id].append((span.name, strings))
    return list(by_trace.values())


def otlp_metric_names(body: bytes) -> set[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    req = ExportMetricsServiceRequest.FromString(body)
    return {m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def otlp_log_count(body: bytes) -> int:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest.FromString(body)
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


# --- one configuration ----------------------------------------------------------------------


def census(app: str, config: str, requests: int, settle: float, workdir: Path) -> dict[str, Any]:
    keep = workdir / f"{app}-{config}"
    keep.mkdir()
    port = run.free_port()
    sink = subprocess.Popen(
        [sys.executable, str(run.BENCH / "sink.py"), "--port", str(port), "--keep", str(keep)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run._wait(lambda: run._get(f"http://127.0.0.1:{port}/stats"), sink, "the sink")
        python = run.ensure_venv(run.venv_of(app, config), print)
        server = run.start_server(app, config, python, run.Pinning(False), port, workdir)
        try:
            for path in PATHS:
                for _ in range(requests):
                    run._get(server.base + path)
            # Let the periodic exports run: uvicorn ends on SIGTERM by re-raising the signal,
            # so an SDK that flushes only in an atexit hook never gets to.
            time.sleep(settle)
        finally:
            server.stop()
    finally:
        sink.terminate()
        sink.wait(10)
    spans: dict[str, list[list[tuple[str, list[str]]]]] = {p: [] for p in PATHS}
    metrics: set[str] = set()
    logs = 0
    for body_file in sorted(keep.iterdir()):
        body = body_file.read_bytes()
        signal = body_file.stem.split("-", 1)[1]
        traces: list[list[tuple[str, list[str]]]] = []
        if signal == "traces":
            traces = datadog_traces(body) if config == "ddtrace" else otlp_traces(body)
        elif signal == "metrics":
            metrics |= otlp_metric_names(body)
        elif signal == "logs":
            logs += otlp_log_count(body)
        for trace in traces:
            text = " ".join(name + " " + " ".join(strings) for name, strings in trace)
            for path, needle in PATHS.items():
                if needle in text:
                    spans[path].append(trace)
                    break
    return {"spans": spans, "metrics": sorted(metrics), "logs": logs}


def describe(result: dict[str, Any], requests: int) -> list[str]:
    cells = []
    for path in PATHS:
        traces = result["spans"][path]
        n = sum(len(t) for t in traces)
        cells.append(f"{n / requests:.1f}" if traces else "0")
    db = result["spans"]["/db"]
    names = collections.Counter(name for trace in db for name, _ in trace)
    cells.append(", ".join(f"{name} x{count / max(1, len(db)):.1f}" for name, count in names.most_common()))
    cells.append(", ".join(result["metrics"]) or "-")
    cells.append(str(result["logs"]))
    return cells


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", default=",".join(run.APPS))
    p.add_argument("--configs", default=",".join(c for c in run.CONFIGS if c != "bare"))
    p.add_argument("--requests", type=int, default=20)
    p.add_argument(
        "--settle", type=float, default=7.0, help="seconds to wait for periodic exports (5 s) before stopping"
    )
    args = p.parse_args()
    # ours at 10% would show a tenth of the spans of ours-100: the census reports what a traced
    # request records.
    header = (
        "| app | config | spans per /hello | per /items/{id} | per /db | a traced /db request's spans "
        "| metrics exported | log records |"
    )
    lines = [header, "|" + "---|" * 8]
    with tempfile.TemporaryDirectory(prefix="otel-perf-census-") as tmp:
        for app in args.apps.split(","):
            for config in args.configs.split(","):
                if config not in run.CONFIGS or not run.applies(config, app):
                    continue
                with contextlib.suppress(KeyboardInterrupt):
                    result = census(app, config, args.requests, args.settle, Path(tmp))
                    lines.append("| " + " | ".join([app, config, *describe(result, args.requests)]) + " |")
                    print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
