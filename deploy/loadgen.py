"""Small load generator for the compose demo: steady traffic so the dashboards have data.

Standard library only. Sends LOADGEN_RPS requests per second, spread over a few threads,
to LOADGEN_TARGET + a path picked at random from LOADGEN_PATHS (comma separated,
`METHOD /path` or `/path`). Stops after LOADGEN_DURATION_S seconds when that is set (> 0),
otherwise runs until the container stops. Errors are counted, never raised: a 500 or a
refused connection is data for the dashboards, not a reason to stop.
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.error
import urllib.request

DEFAULT_PATHS = (
    "GET /api/v1/appointments,"
    "GET /api/v1/appointments/1,"
    "GET /api/v1/appointments/2,"
    "GET /api/v1/appointments/404,"
    "POST /api/v1/appointments"
)


def _requests(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in spec.split(","):
        parts = item.strip().split(maxsplit=1)
        if len(parts) == 2:
            out.append((parts[0].upper(), parts[1]))
        elif parts:
            out.append(("GET", parts[0]))
    return out


def _worker(
    target: str,
    reqs: list[tuple[str, str]],
    interval: float,
    *,
    stop: threading.Event,
    counts: dict[str, int],
    lock: threading.Lock,
) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        method, path = random.choice(reqs)
        body = b"{}" if method in {"POST", "PUT", "PATCH"} else None
        req = urllib.request.Request(
            target + path, data=body, method=method, headers={"Content-Type": "application/json"}
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
    stop = threading.Event()
    counts: dict[str, int] = {}
    lock = threading.Lock()
    workers = [
        threading.Thread(
            target=_worker,
            args=(target, reqs, threads / rps),
            kwargs={"stop": stop, "counts": counts, "lock": lock},
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
