"""Findings: slow requests, slow queries, N+1 patterns, blocked event loops.

Each finding is kept in a bounded structure (recent rings, a capped dict keyed by
(route, statement)), carries the trace id of an example request when there is one, and a
one-line recommendation a developer can act on.  Warning log records for repeated
findings are rate-limited per key by :class:`RateLimiter`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

RECENT = 50
MAX_N_PLUS_ONE = 200


@dataclass
class SlowRequest:
    route: str
    method: str
    duration_ms: float
    status: int
    query_count: int
    db_ms: float
    trace_id: str
    at: float
    recommendation: str


@dataclass
class SlowQuery:
    statement: str
    operation: str
    collection: str
    duration_ms: float
    route: str
    trace_id: str
    at: float
    recommendation: str


@dataclass
class NPlusOne:
    route: str
    method: str
    statement: str
    repeat_count: int
    occurrences: int
    trace_id: str
    first_seen: float
    last_seen: float
    recommendation: str


@dataclass
class LoopBlock:
    lag_ms: float
    route: str
    method: str
    trace_id: str
    at: float
    recommendation: str


def recommend_slow_request(route: str, query_count: int, db_ms: float, duration_ms: float) -> str:
    if duration_ms > 0 and db_ms / duration_ms > 0.5:
        return (
            f"{route}: {db_ms:.0f} of {duration_ms:.0f} ms is SQL over {query_count} queries; "
            "look at the slow queries and N+1 findings for this route first."
        )
    if query_count > 20:
        return f"{route}: {query_count} queries per request; batch or eager-load them."
    return (
        f"{route}: time is spent outside SQL; look for slow outgoing calls or CPU work in the "
        "trace, and cache or move heavy work to a background job."
    )


def recommend_slow_query(operation: str, collection: str, statement: str) -> str:
    table = collection or "the table"
    if operation == "SELECT":
        where = " on the column(s) in its WHERE clause" if " WHERE " in statement.upper() else ""
        return (
            f"Slow SELECT on {table}: check for an index{where} (EXPLAIN the query) "
            "and select fewer columns or rows."
        )
    if operation in ("UPDATE", "DELETE"):
        return (
            f"Slow {operation} on {table}: make sure its WHERE clause uses an index "
            "and the rows are not locked."
        )
    if operation == "INSERT":
        return (
            f"Slow INSERT into {table}: batch rows (executemany / bulk insert) "
            "and check triggers and indexes."
        )
    return "Slow statement: EXPLAIN it and check indexes and locks."


def recommend_n_plus_one(route: str, collection: str, framework: str = "") -> str:
    what = f" of {collection}" if collection else ""
    if framework == "django":
        return (
            f"N+1 on {route}: the same query{what} runs once per item; load the relation with the "
            "list's queryset: select_related() for a ForeignKey or OneToOne, prefetch_related() for "
            "a many-to-many or reverse relation."
        )
    return (
        f"N+1 on {route}: the same query{what} runs once per item; load the relation eagerly "
        "(selectinload/joinedload) or fetch all rows in one query with IN (...)."
    )


def recommend_loop_block(route: str) -> str:
    where = f" in {route}" if route else ""
    return (
        f"Blocking call{where} inside an async endpoint stalled the event loop: make the endpoint a "
        "plain `def` (runs in a thread) or await an async client instead."
    )


class RateLimiter:
    """Allow one event per key per ``interval`` seconds; remember at most ``max_keys`` keys."""

    def __init__(self, interval: float, max_keys: int = 1000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[object, float] = {}
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self, key: object) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self.suppressed += 1
                return False
            if last is None and len(self._last) >= self.max_keys:
                self._last.clear()
            self._last[key] = now
            return True


@dataclass
class FindingStore:
    """Bounded memory of recent findings for the stats endpoint and the exit report."""

    slow_requests: deque[SlowRequest] = field(default_factory=lambda: deque(maxlen=RECENT))
    slow_queries: deque[SlowQuery] = field(default_factory=lambda: deque(maxlen=RECENT))
    loop_blocks: deque[LoopBlock] = field(default_factory=lambda: deque(maxlen=RECENT))
    n_plus_one: dict[tuple[str, str, str], NPlusOne] = field(default_factory=dict)
    n_plus_one_dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_n_plus_one(
        self,
        route: str,
        method: str,
        statement: str,
        count: int,
        trace_id: str,
        collection: str,
        framework: str = "",
    ) -> str:
        """Remember one N+1 occurrence; return its recommendation."""
        key = (method, route, statement)
        now = time.time()
        with self._lock:
            found = self.n_plus_one.get(key)
            if found is None:
                advice = recommend_n_plus_one(f"{method} {route}".strip(), collection, framework)
                if len(self.n_plus_one) >= MAX_N_PLUS_ONE:
                    self.n_plus_one_dropped += 1
                    return advice
                self.n_plus_one[key] = NPlusOne(
                    route, method, statement, count, 1, trace_id, now, now, advice
                )
                return advice
            found.occurrences += 1
            found.last_seen = now
            if count >= found.repeat_count:
                found.repeat_count = count
                found.trace_id = trace_id or found.trace_id
            return found.recommendation

    def clear(self) -> None:
        with self._lock:
            self.slow_requests.clear()
            self.slow_queries.clear()
            self.loop_blocks.clear()
            self.n_plus_one.clear()
            self.n_plus_one_dropped = 0

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "slow_requests": [asdict(x) for x in reversed(self.slow_requests)],
                "slow_queries": [asdict(x) for x in reversed(self.slow_queries)],
                "n_plus_one": sorted(
                    (asdict(x) for x in self.n_plus_one.values()),
                    key=lambda d: (-d["occurrences"], d["route"]),
                ),
                "event_loop_blocks": [asdict(x) for x in reversed(self.loop_blocks)],
            }
