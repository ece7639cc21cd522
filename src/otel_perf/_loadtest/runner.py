"""Drive a service with Locust, used as a library.

Importing this module imports Locust, and importing Locust monkey-patches the whole process
with gevent: only the ``otel-perf loadtest`` command imports it, at the moment it runs.

The run is bounded three ways: the duration, an optional request count, and a hard deadline
(duration + stop grace) after which the users are killed whatever they are doing.  A run
whose first requests all fail to connect stops early: hammering a closed port for a minute
tells nobody anything.
"""

from __future__ import annotations

# Locust patches the standard library with gevent on import; it must come first.  The
# warning gevent gives for `ssl` (already imported by the CLI's other commands) is about
# SSL objects created before patching -- we create none.
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl has already been imported")
    import gevent
    import locust  # noqa: F401  (patches first)
    from locust import FastHttpUser, HttpUser, User, between, task
    from locust.env import Environment
    from locust.event import Events
    from locust.util.load_locustfile import load_locustfile

import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otel_perf._loadtest.results import Collector
from otel_perf._loadtest.scenario import Scenario
from otel_perf._loadtest.tagging import trace_id_of

__all__ = ["RunInfo", "run"]

#: Connection failures among the first requests that make the run stop as unreachable.
_UNREACHABLE_AFTER = 30


@dataclass
class RunInfo:
    """How the run went: when, for how long, and why it stopped."""

    started: float
    ended: float
    stop_reason: str
    peak_users: int
    user_classes: list[str]


def _scenario_user(scenario: Scenario, host: str, headers: dict[str, str], timeout: float) -> type[User]:
    specs = scenario.requests
    weights = [s.weight for s in specs]
    rng = random.Random()

    class ScenarioUser(FastHttpUser):
        """One virtual user: picks a weighted request, sends it, thinks, repeats."""

        wait_time = between(scenario.wait_min_s, scenario.wait_max_s)
        network_timeout = timeout
        connection_timeout = timeout
        default_headers = {**scenario.headers, **headers}  # noqa: RUF012 (Locust's own class attribute)

        @task
        def step(self) -> None:
            spec = rng.choices(specs, weights)[0]
            kwargs: dict[str, Any] = {"name": spec.key, "catch_response": True}
            if spec.headers:
                kwargs["headers"] = dict(spec.headers)
            if spec.json is not None:
                kwargs["json"] = spec.json
            elif spec.body is not None:
                kwargs["data"] = spec.body
            with self.client.request(spec.method, spec.url(rng), **kwargs) as response:
                status = int(response.status_code or 0)
                if spec.ok(status):
                    response.success()
                elif status:
                    response.failure(f"HTTP {status}")
                else:
                    response.failure(f"no response: {response.error!r}"[:200])

    ScenarioUser.host = host
    ScenarioUser.__name__ = ScenarioUser.__qualname__ = f"Scenario_{scenario.name.replace('-', '_')}"
    return ScenarioUser


def _tagged(cls: type[User], host: str, headers: dict[str, str], timeout: float) -> type[User]:
    """A Locust-file user class, with the run's tag headers on every request."""
    attrs: dict[str, Any] = {"__module__": cls.__module__}
    if not cls.host:
        attrs["host"] = host
    if issubclass(cls, FastHttpUser):
        attrs["default_headers"] = {**(cls.default_headers or {}), **headers}
    elif issubclass(cls, HttpUser):
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            cls.__init__(self, *args, **kwargs)  # type: ignore[no-untyped-call]
            self.client.headers.update(headers)

        attrs["__init__"] = __init__
    return type(cls.__name__, (cls,), attrs)


def _user_classes(scenario: Scenario, host: str, headers: dict[str, str], timeout: float) -> list[type[User]]:
    if scenario.locustfile is None:
        return [_scenario_user(scenario, host, headers, timeout)]
    # (user classes, shape classes); Locust before 2.36 put the file's docstring first
    *_, classes, shapes = load_locustfile(scenario.locustfile)
    if not classes:
        raise ValueError(f"{scenario.locustfile}: defines no Locust User class (subclass HttpUser or "
                         "FastHttpUser with @task methods).")
    if shapes:
        logging.getLogger("otel_perf").warning("%s: LoadTestShape ignored; --users/--spawn-rate/--duration "
                                               "drive the run", scenario.locustfile)
    return [_tagged(c, host, headers, timeout) for c in classes.values()]


def _key(request_type: str, name: str) -> str:
    first = name.partition(" ")[0]
    return name if first.isalpha() and first.isupper() else f"{request_type} {name}"


def run(
    scenario: Scenario,
    host: str,
    users: int,
    spawn_rate: float,
    duration_s: float,
    collector: Collector,
    headers: dict[str, str],
    *,
    max_requests: int = 0,
    timeout_s: float = 10.0,
    stop_grace_s: float = 5.0,
    progress: Callable[[float, int, Collector], None] | None = None,
    progress_every_s: float = 1.0,
    at_warmup_end: Callable[[], None] | None = None,
) -> RunInfo:
    """Run the load test; every finished request goes to ``collector``.

    ``at_warmup_end`` runs once when the collector's warm-up is over (e.g. to reset the
    server's stats window, so both sides measure the same span).
    """
    logging.getLogger("locust").setLevel(logging.WARNING)
    classes = _user_classes(scenario, host, headers, timeout_s)
    env = Environment(user_classes=classes, events=Events(), host=host,  # type: ignore[no-untyped-call]
                      stop_timeout=stop_grace_s)
    state: dict[str, Any] = {"reason": "", "connect_failures": 0}

    def on_request(request_type: str, name: str, response_time: float | None, response: Any = None,
                   exception: BaseException | None = None, start_time: float | None = None, **_: Any) -> None:
        status = int(getattr(response, "status_code", 0) or 0) if response is not None else 0
        trace = ""
        if response is not None and status:
            try:
                trace = trace_id_of(response.headers.get("traceresponse"))
            except Exception:
                trace = ""
        latency = float(response_time or 0.0)
        end = (start_time or time.time()) + latency / 1000.0
        error = "" if exception is None else (str(exception) or type(exception).__name__)
        collector.record(_key(request_type, name), latency, exception is None, status, end, trace, error)
        if status == 0 and exception is not None and collector.seen <= _UNREACHABLE_AFTER:
            state["connect_failures"] += 1
            if state["connect_failures"] >= _UNREACHABLE_AFTER:
                stop("target unreachable")
        if max_requests and collector.seen >= max_requests:
            stop("request limit")

    env.events.request.add_listener(on_request)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()

    def stop(reason: str) -> None:
        if not state["reason"]:
            state["reason"] = reason
            gevent.spawn(runner.quit)

    started = time.time()
    collector.start(started)
    peak = 0
    handlers = [gevent.signal_handler(sig, stop, "interrupted") for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        runner.start(users, spawn_rate=spawn_rate)
        # Wall-clock checks, not gevent timers: the event loop's cached time can lag behind.
        deadline = started + duration_s + stop_grace_s + 10.0
        next_progress = started + progress_every_s
        while not runner.greenlet.join(timeout=0.2):
            now = time.time()
            if now - started >= duration_s:
                stop("duration")
            if at_warmup_end is not None and now >= collector.warmup_until:
                gevent.spawn(at_warmup_end)
                at_warmup_end = None
            peak = max(peak, runner.user_count)
            collector.note_users(now, runner.user_count)
            if progress is not None and now >= next_progress:
                progress(now - started, runner.user_count, collector)
                next_progress += progress_every_s
            if now > deadline:
                state["reason"] = state["reason"] or "deadline"
                runner.greenlet.kill(block=False)
                break
    finally:
        for handler in handlers:
            handler.cancel()
    ended = time.time()
    sys.stdout.flush()
    return RunInfo(started, ended, str(state["reason"] or "duration"), peak, [c.__name__ for c in classes])
