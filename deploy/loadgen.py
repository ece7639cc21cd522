"""Small load generator for the compose demo: steady traffic so the dashboards have data.

Standard library only. Sends LOADGEN_RPS requests per second, spread over LOADGEN_THREADS
threads, to LOADGEN_TARGET + a request picked at random from LOADGEN_PATHS: comma separated
`METHOD /path` or `/path` items, each optionally weighted with `*N`. POSTs send
LOADGEN_POST_BODY (JSON). Stops after LOADGEN_DURATION_S seconds when that is set (> 0),
otherwise runs until the container stops. Errors are counted, never raised: a 500 or a
refused connection is data for the dashboards, not a reason to stop.

The default mix exercises the demo app (src/otel_perf/_demo/app.py): the N+1 list and its
eager twin, detail views (some 404), creates, the rate-limited outgoing call, the slow report,
a slow endpoint, and a rare failure (about 0.5% of requests).
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.error
import urllib.request

DEFAULT_PATHS = ",".join(
    (
        "GET /api/v1/appointments*40",
        "GET /api/v1/appointments/eager*20",
        "GET /api/v1/appointments/1*30",
        "GET /api/v1/appointments/7*20",
        "GET /api/v1/appointments/99999*5",
        "POST /api/v1/appointments*15",
        "GET /api/v1/forecast*20",
        "GET /api/v1/reports/busiest-days?n=200000*5",
        "GET /api/v1/slow?ms=700*3",
        "GET /hello*40",
        "GET /api/v1/boom*1",
    )
)
DEFAULT_POST_BODY = '{"patient_id": 1, "reason": "loadgen check-up"}'


def _requests(spec: str) -> list[tuple[str, str]]:
    """Parse LOADGEN_PATHS into (method, path) pairs, a weighted item repeated N times."""
    out = []
    for raw in spec.split(","):
        item, _, weight = raw.strip().partition("*")
        parts = item.split(maxsplit=1)
        if not parts:
            continue
        method, path = (parts[0].upper(), parts[1]) if len(parts) == 2 else ("GET", parts[0])
        out.extend([(method, path)] * max(1, int(weight or 1)))
    return out


def _worker(
    target: str,
    reqs: list[tuple[str, str]],
    interval: float,
    *,
    body: bytes,
    stop: threading.Event,
    counts: dict[str, int],
    lock: threading.Lock,
) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        method, path = random.choice(reqs)
        data = body if method in {"POST", "PUT", "PATCH"} else None
        req = urllib.request.Request(
            target + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                key = str(resp.status)
                resp.read()
        except urllib.error.HTTPError as exc:
            key = str(exc.code)
        except (urllib.error.URLError, OSError):
            key = "connection-error"
        with lock:
            counts[key] = counts.get(key, 0) + 1
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def main() -> None:
    target = os.environ.get("LOADGEN_TARGET", "http://demo:8000").rstrip("/")
    rps = max(0.1, float(os.environ.get("LOADGEN_RPS", "10")))
    threads = max(1, int(os.environ.get("LOADGEN_THREADS", "4")))
    duration = float(os.environ.get("LOADGEN_DURATION_S", "0"))
    reqs = _requests(os.environ.get("LOADGEN_PATHS") or DEFAULT_PATHS)
    body = (os.environ.get("LOADGEN_POST_BODY") or DEFAULT_POST_BODY).encode()
    stop = threading.Event()
    counts: dict[str, int] = {}
    lock = threading.Lock()
    workers = [
        threading.Thread(
            target=_worker,
            args=(target, reqs, threads / rps),
            kwargs={"body": body, "stop": stop, "counts": counts, "lock": lock},
            daemon=True,
        )
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    started = time.monotonic()
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            time.sleep(min(30.0, duration) if duration > 0 else 30.0)
            with lock:
                print("loadgen:", dict(sorted(counts.items())), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)


if __name__ == "__main__":
    main()
