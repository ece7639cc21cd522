"""``otel-perf demo``: the bundled demo app under the launcher, a bounded burst of
requests, and what was captured: no backend needed.

Starts a loopback OTLP sink, runs ``otel-perf-instrument python -m uvicorn
otel_perf._demo.app:app`` against it, drives a fixed set of requests (an N+1 list and its
eager twin, a slow query, a slow request, a blocking call, a rate-limited upstream, an
error), prints the performance report from the stats endpoint, stops the app (which
flushes its telemetry) and prints the spans, trace ids, metrics and logs that arrived.

When Chromium is installed, the demo page (``/``, with the browser script) is also opened in
headless Chromium: the page load, its Web Vitals and its fetch call arrive as browser
telemetry, and the output shows them joined to the server's traces (and where a screenshot of
the page was saved).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

NAME = "demo"
HELP = "Run the bundled demo app instrumented, drive requests, and show what was captured."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="how many times to run the request mix (1-50)")
    parser.add_argument("--database-url", default="", help="SQLAlchemy URL for the demo (default: SQLite)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    parser.add_argument(
        "--no-browser", action="store_true", help="do not open the demo page in headless Chromium"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(client: Any, url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo app exited with code {proc.returncode} before it was ready")
        try:
            if client.get(url).status_code == 200:
                return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"the demo app did not answer {url} in time")


def _drive(client: Any, base: str, rounds: int, deadline: float) -> tuple[int, str]:
    sent = 0
    example = ""
    mix: list[tuple[str, str, int]] = [
        ("GET", "/hello", 5),
        ("GET", "/api/v1/appointments?limit=10", 3),
        ("GET", "/api/v1/appointments/eager?limit=10", 3),
        ("GET", "/api/v1/appointments/{id}", 10),
        ("POST", "/api/v1/appointments", 2),
        ("GET", "/api/v1/forecast", 12),
        ("GET", "/api/v1/reports/busiest-days", 1),
    ]
    once = [("GET", "/api/v1/slow?ms=1100"), ("GET", "/api/v1/blocking?ms=250"), ("GET", "/api/v1/boom")]
    for r in range(rounds):
        for method, path, times in mix:
            for i in range(times):
                if time.monotonic() > deadline:
                    return sent, example
                url = base + path.replace("{id}", str(1 + (i + r) % 30))
                if method == "POST":
                    response = client.post(url, json={"patient_id": 1 + i % 5, "reason": "demo"})
                else:
                    response = client.get(url)
                sent += 1
                if not example and path.startswith("/api/v1/appointments?"):
                    example = response.headers.get("traceresponse", "")
    for method, path in once:
        # The 500 makes uvicorn drop the keep-alive connection: ask on a fresh one.
        client.request(method, base + path, headers={"Connection": "close"})
        sent += 1
    return sent, example


def run(args: argparse.Namespace) -> int:
    try:
        import httpx
    except ImportError:
        print(
            "otel-perf demo needs the demo extra: pip install 'otel-perf-instrument[demo]'", file=sys.stderr
        )
        return 2
    from otel_perf._demo.sink import Sink
    from otel_perf._export.report import render

    rounds = max(1, min(args.rounds, 50))
    sink = Sink().start()
    port = _free_port()
    token = secrets.token_urlsafe(16)
    workdir = tempfile.mkdtemp(prefix="otel-perf-demo-")
    log_path = os.path.join(workdir, "app.log")
    env = dict(os.environ)
    env.update(
        {
            "OTEL_SERVICE_NAME": "otel-perf-demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "OTEL_PERF_STATS_PATH": "/_perf",
            "OTEL_PERF_STATS_TOKEN": token,
            "DEMO_UPSTREAM_LIMIT": "20",
            # The demo page's browser script posts to the same loopback sink (OTLP/JSON, CORS).
            "OTEL_PERF_BROWSER_ENDPOINT": sink.endpoint,
        }
    )
    if args.database_url:
        env["DEMO_DATABASE_URL"] = args.database_url
    cmd = [
        sys.executable,
        "-m",
        "otel_perf._cli.launcher",
        sys.executable,
        "-m",
        "uvicorn",
        "otel_perf._demo.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    print(f"$ otel-perf-instrument uvicorn otel_perf._demo.app:app --port {port}   (app log: {log_path})")
    deadline = time.monotonic() + args.timeout
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=15.0) as client:
            _wait_ready(client, base + "/hello", proc, deadline)
            sent, example = _drive(client, base, rounds, deadline)
            stats = client.get(base + "/_perf", headers={"Authorization": f"Bearer {token}"}).json()
            browser = "" if args.no_browser else _open_in_browser(base + "/", workdir, deadline)
        print(f"sent {sent} requests\n")
        print(render(stats))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    time.sleep(0.3)
    sink.stop()
    _print_captured(sink.tally, example)
    _print_browser(sink.tally, browser)
    return 0 if sink.tally.spans else 1


CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _open_in_browser(url: str, workdir: str, deadline: float) -> str:
    """Load the demo page in headless Chromium (if installed); return what happened, for the output.

    ``--virtual-time-budget`` lets the page run its timers (the script sends the page load a few
    seconds after ``load``) without waiting that long; ``--screenshot`` keeps a picture of it.
    """
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    if binary is None:
        return "Chromium not found: open the demo page in a browser while the app runs to see browser data."
    profile = tempfile.mkdtemp(prefix="profile-", dir=workdir)
    screenshot = os.path.join(workdir, "demo-page.png")
    cmd = [binary, "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--window-size=1024,640", "--virtual-time-budget=8000",
           f"--screenshot={screenshot}", url]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")  # Chromium refuses to sandbox as root
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       timeout=max(5.0, min(60.0, deadline - time.monotonic())))  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"headless Chromium did not finish ({type(exc).__name__}); no browser telemetry."
    time.sleep(0.5)  # the last export is a fetch the page fired on its way out
    shown = f" (screenshot: {screenshot})" if os.path.exists(screenshot) else ""
    return f"headless Chromium opened {url}{shown}"


def _print_browser(tally: Any, what: str) -> None:
    if not what:
        return
    print(f"\nBrowser: {what}")
    with tally.lock:
        spans = list(tally.browser)
        servers = dict(tally.server_spans)
        metrics = sorted(tally.browser_metrics)
    for span in spans:
        a = span.attributes
        if span.name == "page load":
            vitals = ", ".join(
                f"{label} {a[key]:g}{unit}"
                for label, key, unit in (
                    ("TTFB", "perf.browser.ttfb_ms", " ms"),
                    ("FCP", "perf.browser.fcp_ms", " ms"),
                    ("LCP", "perf.browser.lcp_ms", " ms"),
                    ("CLS", "perf.browser.cls", ""),
                    ("load", "perf.browser.load_ms", " ms"),
                )
                if isinstance(a.get(key), int | float)
            )
            print(f"  page load {a.get('http.route', '')}: {vitals}")
            parent = servers.get(span.parent_span_id)
            if parent is not None and parent[1] == span.trace_id:
                print(f"    child of the server span {parent[0]!r} in trace {span.trace_id}: one trace")
        elif span.kind == "CLIENT":
            children = [name for name, trace in servers.values() if trace == span.trace_id]
            joined = f" -> server span {children[0]!r} in the same trace" if children else ""
            template = a.get("url.template", "")
            status = a.get("http.response.status_code", "")
            method = a.get("http.request.method", "")
            print(f"  fetch {method} {template} ({status}) trace {span.trace_id}{joined}")
    if metrics:
        print(f"  browser metrics: {', '.join(metrics)}")


def _print_captured(tally: Any, example: str) -> None:
    print("Captured over OTLP (no backend needed):")
    server = sorted(
        ((name, n) for (name, kind), n in tally.spans.items() if kind == "SERVER"), key=lambda x: x[0]
    )
    other = sorted(
        ((f"{name} ({kind})", n) for (name, kind), n in tally.spans.items() if kind != "SERVER"),
        key=lambda x: -x[1],
    )
    total = sum(tally.spans.values())
    print(f"  spans: {total}")
    for name, count in server:
        ids = ", ".join(tally.server_traces.get(name, [])[:1])
        print(f"    {count:4d}  {name:<48} e.g. trace {ids}")
    for name, count in other[:8]:
        print(f"    {count:4d}  {name}")
    print(f"  metrics: {len(tally.metric_names)} names")
    for name in sorted(tally.metric_names):
        print(f"    {name}")
    print(f"  logs: {tally.logs} records, {tally.logs_with_trace} with a trace id")
    for line in tally.log_examples:
        print(f"    {line}")
    if example:
        print(f"\nEvery response carries its trace: traceresponse: {example}")
