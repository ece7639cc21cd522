"""The bundled demo: a small appointments API with the performance problems we detect.

Plain FastAPI + SQLAlchemy + httpx, no telemetry code: run it under the launcher::

    otel-perf-instrument uvicorn otel_perf._demo.app:app --port 8000

Endpoints (all under ``/api/v1``): a list with an N+1 (lazy-loaded patients) and its
eager-loading twin, a detail view, a create, a slow report query, a slow endpoint, a
blocking call inside an async endpoint, and an outgoing call to a rate-limited upstream
(served by this same app under ``/upstream`` unless ``DEMO_UPSTREAM_URL`` points elsewhere).

Environment: ``DEMO_DATABASE_URL`` (default: SQLite file in a temp folder),
``DEMO_UPSTREAM_URL``, ``DEMO_SLOWDOWN`` (``/route:ms,...`` adds latency, used to
demonstrate regression detection), ``DEMO_SEED`` (rows to create, default 40).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

logger = logging.getLogger("demo")


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))


class Appointment(Base):
    __tablename__ = "appointments"
    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    starts_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(200))
    patient: Mapped[Patient] = relationship(lazy="select")


def _database_url() -> str:
    url = os.environ.get("DEMO_DATABASE_URL", "")
    if url:
        return url
    folder = tempfile.mkdtemp(prefix="otel-perf-demo-")
    return f"sqlite:///{os.path.join(folder, 'demo.db')}"


engine = create_engine(_database_url(), pool_size=5, max_overflow=5)


def _slowdowns() -> dict[str, float]:
    out: dict[str, float] = {}
    for part in os.environ.get("DEMO_SLOWDOWN", "").split(","):
        route, sep, ms = part.rpartition(":")
        if sep and route:
            try:
                out[route.strip()] = float(ms) / 1000.0
            except ValueError:
                logger.warning("DEMO_SLOWDOWN entry %r ignored (expected /route:ms)", part)
    return out


SLOWDOWN = _slowdowns()


def seed(rows: int) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        if s.scalar(select(func.count()).select_from(Patient)):
            return
        patients = [
            Patient(name=f"Patient {i}", email=f"patient{i}@example.org") for i in range(rows // 4 + 1)
        ]
        s.add_all(patients)
        s.flush()
        start = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
        s.add_all(
            Appointment(
                patient_id=patients[i % len(patients)].id,
                starts_at=start + timedelta(minutes=30 * i),
                reason="checkup" if i % 3 else "follow-up",
            )
            for i in range(rows)
        )
        s.commit()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    seed(int(os.environ.get("DEMO_SEED", "40")))
    app.state.client = httpx.AsyncClient(timeout=5.0)
    yield
    await app.state.client.aclose()


app = FastAPI(title="otel-perf demo", lifespan=lifespan)


async def _maybe_slow(route: str) -> None:
    delay = SLOWDOWN.get(route)
    if delay:
        await asyncio.sleep(delay)


class AppointmentIn(BaseModel):
    patient_id: int
    reason: str


def _as_dict(a: Appointment) -> dict[str, Any]:
    return {"id": a.id, "patient": a.patient.name, "starts_at": a.starts_at.isoformat(), "reason": a.reason}


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


# The browser half (issue #22): a page with the one-line set-up. With OTEL_PERF_BROWSER_ENDPOINT
# set, the launcher's middleware serves /_otel_perf/browser.js and joins the page load to the
# trace of this request; /demo.js fetches the (N+1) appointment list, in a trace of its own.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>otel-perf demo: appointments</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="/_otel_perf/browser.js" defer></script>
<script src="/demo.js" defer></script>
<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:40rem;padding:0 1rem}
h1{font-size:1.6rem}li{padding:.2rem 0}button{font:inherit;padding:.3rem .9rem}</style>
</head><body>
<h1>Appointments this week</h1>
<p>Loaded by <code>/demo.js</code> from <code>GET /api/v1/appointments</code>. The browser script
records this page load, its Web Vitals and the API call, in the same traces as the server.</p>
<button id="refresh">Refresh</button>
<ul id="list"><li>loading&hellip;</li></ul>
</body></html>
"""
PAGE_SCRIPT = """document.addEventListener('DOMContentLoaded', function () {
  var list = document.getElementById('list');
  function load() {
    fetch('/api/v1/appointments?limit=5').then(function (r) { return r.json(); }).then(function (rows) {
      list.innerHTML = '';
      rows.forEach(function (a) {
        var li = document.createElement('li');
        var when = a.starts_at.slice(0, 16).replace('T', ' ');
        li.textContent = when + '  ' + a.patient + ' (' + a.reason + ')';
        list.appendChild(li);
      });
    });
  }
  document.getElementById('refresh').addEventListener('click', load);
  load();
});
"""


@app.get("/")
async def page() -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


@app.get("/demo.js")
async def page_script() -> Response:
    return Response(PAGE_SCRIPT, media_type="text/javascript")


@app.get("/api/v1/appointments")
def list_appointments(limit: int = 10) -> list[dict[str, Any]]:
    """N+1: each appointment lazily loads its patient with one more query."""
    with Session(engine) as s:
        rows = s.scalars(select(Appointment).order_by(Appointment.id).limit(limit)).all()
        logger.info("listing %d appointments", len(rows))
        return [_as_dict(a) for a in rows]


@app.get("/api/v1/appointments/eager")
def list_appointments_eager(limit: int = 10) -> list[dict[str, Any]]:
    """The fix: the same list with the patients loaded in one extra query."""
    with Session(engine) as s:
        rows = s.scalars(
            select(Appointment)
            .options(selectinload(Appointment.patient))
            .order_by(Appointment.id)
            .limit(limit)
        ).all()
        return [_as_dict(a) for a in rows]


@app.get("/api/v1/appointments/{appointment_id}")
async def get_appointment(appointment_id: int) -> dict[str, Any]:
    await _maybe_slow("/api/v1/appointments/{appointment_id}")
    with Session(engine) as s:
        a = s.get(Appointment, appointment_id)
        if a is None:
            raise HTTPException(404, "no such appointment")
        return _as_dict(a)


def send_confirmation(appointment_id: int) -> None:
    """A background job after the response (its own span and perf.job.* metrics, not the request's)."""
    with Session(engine) as s:
        a = s.get(Appointment, appointment_id)
        patient = s.get(Patient, a.patient_id) if a is not None else None
    logger.info("confirmation sent to %s", patient.email if patient is not None else "nobody")


@app.post("/api/v1/appointments", status_code=201)
def create_appointment(body: AppointmentIn, tasks: BackgroundTasks) -> dict[str, Any]:
    with Session(engine) as s:
        if s.get(Patient, body.patient_id) is None:
            raise HTTPException(422, "unknown patient")
        a = Appointment(patient_id=body.patient_id, reason=body.reason, starts_at=datetime.now(timezone.utc))
        s.add(a)
        s.commit()
        tasks.add_task(send_confirmation, a.id)
        return {"id": a.id}


@app.get("/api/v1/reports/busiest-days")
def slow_report(n: int = 2_500_000) -> dict[str, int]:
    """A deliberately slow query (a recursive CTE standing in for a missing index).

    The default runs for about 300 ms here, well over the 100 ms slow-query threshold: at
    800,000 rows it took 96-120 ms and the demo's slow-query finding came and went.
    """
    with Session(engine) as s:
        total = s.scalar(
            text(
                "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < :n) "
                "SELECT count(*) FROM cnt"
            ),
            {"n": max(1, min(n, 5_000_000))},
        )
        return {"rows": int(total or 0)}


@app.get("/api/v1/slow")
async def slow_endpoint(ms: float = 1200) -> dict[str, float]:
    await asyncio.sleep(max(0.0, min(ms, 10_000)) / 1000.0)
    return {"slept_ms": ms}


@app.get("/api/v1/blocking")
async def blocking(ms: float = 200) -> dict[str, float]:
    """The classic bug: a synchronous sleep inside an async endpoint blocks every request."""
    time.sleep(max(0.0, min(ms, 5_000)) / 1000.0)
    return {"blocked_ms": ms}


@app.get("/api/v1/boom")
async def boom() -> dict[str, str]:
    raise RuntimeError("demo failure")


@app.get("/api/v1/forecast")
async def forecast(request: Request) -> dict[str, Any]:
    """An outgoing call to a rate-limited third-party API."""
    base = os.environ.get("DEMO_UPSTREAM_URL") or str(request.base_url).rstrip("/") + "/upstream"
    response = await app.state.client.get(f"{base}/forecast", params={"city": "Berlin"})
    if response.status_code == 429:
        raise HTTPException(503, "upstream rate limit reached, retry later")
    return {"upstream_status": response.status_code, "forecast": response.json()}


class _Quota:
    """The simulated upstream's fixed-window rate limit."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.used, self.started = 0, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, int, float]:
        with self.lock:
            now = time.monotonic()
            if now - self.started >= self.window:
                self.used, self.started = 0, now
            reset = self.window - (now - self.started)
            if self.used >= self.limit:
                return False, 0, reset
            self.used += 1
            return True, self.limit - self.used, reset


QUOTA = _Quota(int(os.environ.get("DEMO_UPSTREAM_LIMIT", "30")), 60.0)


@app.get("/upstream/forecast")
async def upstream_forecast(response: Response, city: str = "Berlin") -> Any:
    ok, remaining, reset = QUOTA.take()
    headers = {
        "X-RateLimit-Limit": str(QUOTA.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(reset)),
    }
    if not ok:
        headers["Retry-After"] = str(int(reset) + 1)
        return Response(
            '{"error": "rate limited"}', status_code=429, headers=headers, media_type="application/json"
        )
    response.headers.update(headers)
    return {"city": city[:50], "temperature_c": 21}
