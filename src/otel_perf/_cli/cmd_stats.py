"""``otel-perf stats URL``: the exit report's table, read from a running service.

Reads the app's stats endpoint (the whole service: every worker of its server) and prints the
same per-endpoint table and findings as the exit report, or the JSON (``--json``).  The token
comes from ``--token`` or ``$OTEL_PERF_STATS_TOKEN``; the path from the URL, else ``--path``,
else ``$OTEL_PERF_STATS_PATH``, else ``/_perf``.  ``--fail-on degraded`` (or ``unhealthy``)
exits 1 when the service's status is that bad or worse, so a cron job or CI step needs no
``curl | jq`` around it.  Exit codes: 0 ok, 1 status at or past ``--fail-on``, 2 bad input,
3 the service could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from otel_perf._export.report import render

NAME = "stats"
HELP = "Print the per-endpoint table and findings of a running service (its stats endpoint)."
EXIT_OK, EXIT_STATUS, EXIT_INPUT, EXIT_READ = 0, 1, 2, 3
_RANK = {"healthy": 0, "no_requests": 0, "degraded": 1, "unhealthy": 2}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the service, e.g. http://127.0.0.1:8000 (or the stats URL itself, "
                                    "http://127.0.0.1:8000/_perf)")
    parser.add_argument("--path", default=None,
                        help="stats path when the URL has none (default: $OTEL_PERF_STATS_PATH or /_perf)")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: $OTEL_PERF_STATS_TOKEN); prefer the variable, "
                             "arguments show in the process list")
    parser.add_argument("--minutes", type=int, default=None, help="only the last N minutes (1-60)")
    parser.add_argument("--top", type=int, default=None, help="only the N slowest endpoints (by p95)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of the table")
    parser.add_argument("--fail-on", choices=("degraded", "unhealthy"), default=None,
                        help="exit 1 when the status is this or worse")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")


def stats_url(url: str, path: str | None, minutes: int | None, top: int | None) -> str:
    """The full stats URL: ``url``'s own path when it has one, else ``path``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL of the service")
    own = parts.path.rstrip("/")
    chosen = own or (path or os.environ.get("OTEL_PERF_STATS_PATH") or "/_perf").rstrip("/")
    if not chosen.startswith("/"):
        chosen = "/" + chosen
    query = urllib.parse.urlencode({k: v for k, v in (("minutes", minutes), ("top", top)) if v is not None})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, chosen, query, ""))


def fetch(url: str, token: str, timeout: float) -> dict[str, Any]:
    """The JSON summary at ``url``; RuntimeError saying what went wrong and what to do."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read()[:300].decode(errors="replace")
        hint = {
            401: "wrong or missing token: set OTEL_PERF_STATS_TOKEN to the app's token (or pass --token)",
            404: "nothing at that path: is OTEL_PERF_STATS_PATH (and OTEL_PERF_STATS_TOKEN) set on the app, "
                 "and is this its path (--path)?",
        }.get(exc.code, detail)
        raise RuntimeError(f"GET {url} -> HTTP {exc.code}: {hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"GET {url} failed: {reason}; is the service running there?") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise RuntimeError(f"GET {url} did not answer JSON (is it the stats path?): {body[:120]!r}") from None
    if not isinstance(doc, dict) or "endpoints" not in doc:
        raise RuntimeError(f"GET {url} answered JSON that is not an otel-perf stats summary")
    return doc


def run(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get("OTEL_PERF_STATS_TOKEN", "")
    if not token:
        print("otel-perf stats: no token: set OTEL_PERF_STATS_TOKEN to the app's stats token "
              "(or pass --token)", file=sys.stderr)
        return EXIT_INPUT
    for name, value, high in (("--minutes", args.minutes, 60), ("--top", args.top, 1000)):
        if value is not None and not 1 <= value <= high:
            print(f"otel-perf stats: {name} must be from 1 to {high}, got {value}", file=sys.stderr)
            return EXIT_INPUT
    try:
        url = stats_url(args.url, args.path, args.minutes, args.top)
    except ValueError as exc:
        print(f"otel-perf stats: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        stats = fetch(url, token, args.timeout)
    except RuntimeError as exc:
        print(f"otel-perf stats: {exc}", file=sys.stderr)
        return EXIT_READ
    if args.json:
        print(json.dumps(stats, indent=1))
    else:
        sys.stdout.write(render(stats))
    status = str(stats.get("status", ""))
    if args.fail_on and _RANK.get(status, 0) >= _RANK[args.fail_on]:
        print(f"otel-perf stats: status {status} (--fail-on {args.fail_on})", file=sys.stderr)
        return EXIT_STATUS
    return EXIT_OK
