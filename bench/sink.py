"""An OTLP/HTTP sink for the benchmark: accepts every export and discards it.

It answers ``200`` with an empty protobuf body to ``POST /v1/traces|metrics|logs`` over
HTTP/1.1 keep-alive, counting requests and bytes per signal (nothing is decoded, so the
sink spends as little CPU as possible on the load generator's core).  It stands in for a
Datadog agent too: ``PUT``/``POST /v0.x/traces`` (ddtrace's msgpack payloads) are counted as
traces and answered ``{}`` (no sampling rates: the tracer keeps its defaults); other ``GET``
paths (the tracer's ``/info`` probe) get 404.  ``GET /stats`` returns the counts as JSON.
Loopback only.

    python bench/sink.py --port 4318
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_counts: dict[str, list[int]] = {}
#: ``--keep DIR``: every body is also written there (``<n>-<signal>.bin``), for inspection.
_keep: list[str] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        chunks = []
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
            if _keep:
                chunks.append(chunk)
        signal = self.path.rsplit("/", 1)[-1]
        with _lock:
            entry = _counts.setdefault(signal, [0, 0])
            entry[0] += 1
            entry[1] += length
            number = sum(e[0] for e in _counts.values())
        if _keep:
            with open(f"{_keep[0]}/{number:06d}-{signal}.bin", "wb") as out:
                out.write(b"".join(chunks))
        otlp = self.path.startswith("/v1/")
        body = b"" if otlp else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf" if otlp else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def do_GET(self) -> None:
        if self.path not in ("/stats", "/reset"):
            self.send_error(404)
            return
        with _lock:
            body = json.dumps({k: {"requests": v[0], "bytes": v[1]} for k, v in _counts.items()}).encode()
        if self.path == "/reset":
            with _lock:
                _counts.clear()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=4318)
    p.add_argument("--keep", metavar="DIR", help="also write every body to DIR (created if missing)")
    args = p.parse_args()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        _keep.append(args.keep)
    server = serve(args.port)
    print(f"sink listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
