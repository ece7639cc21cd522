"""Sample service for the end-to-end tests: plain FastAPI + SQLAlchemy + httpx, requests, urllib3,
aiohttp (and Redis when asked), no telemetry code.

Run under ``otel-perf-instrument``.  Environment: ``APP_DATABASE_URL`` (sync URL),
``APP_ASYNC_DATABASE_URL`` (async URL, optional), ``APP_PEER_URL`` (another instance to call),
``APP_REDIS_URL`` (a Redis server, optional).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import aiohttp
import httpx
import requests
import urllib3
from fastapi import APIRouter, FastAPI, Response, WebSocket
from sqlalchemy import ForeignKey, String, create_engine, insert, select, text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

import otel_perf

log = logging.getLogger("service")


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    note: Mapped[str] = mapped_column(String(200))
    customer: Mapped[Customer] = relationship(lazy="select")


engine = create_engine(os.environ["APP_DATABASE_URL"])
Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)
with Session(engine) as _s:
    _s.add_all(Customer(id=i, name=f"customer {i}") for i in range(1, 11))
    _s.flush()
    _s.add_all(Order(id=i, customer_id=1 + i % 10, note=f"order {i}") for i in range(1, 21))
    _s.commit()

async_engine: Any = None
if os.environ.get("APP_ASYNC_DATABASE_URL"):
    from sqlalchemy.ext.asyncio import create_async_engine

    async_engine = create_async_engine(os.environ["APP_ASYNC_DATABASE_URL"])

app = FastAPI()
PEER = os.environ.get("APP_PEER_URL", "")
QUOTA = {"left": 3}


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict[str, Any]:
    log.info("fetching item %s", item_id)
    with Session(engine) as s:
        order = s.get(Order, item_id)
        return {"id": item_id, "note": order.note if order else None}


@app.get("/async-items/{item_id}")
async def get_item_async(item_id: int) -> dict[str, Any]:
    async with async_engine.connect() as conn:
        row = (await conn.execute(select(Order.note).where(Order.id == item_id))).first()
        return {"id": item_id, "note": row[0] if row else None}


@app.get("/orders/n-plus-one")
def orders_n_plus_one() -> list[str]:
    with Session(engine) as s:
        return [o.customer.name for o in s.scalars(select(Order).order_by(Order.id).limit(8))]


@app.get("/orders/eager")
def orders_eager() -> list[str]:
    with Session(engine) as s:
        rows = s.scalars(select(Order).options(selectinload(Order.customer)).order_by(Order.id).limit(8))
        return [o.customer.name for o in rows]


@app.get("/orders/joined")
def orders_joined() -> list[str]:
    with Session(engine) as s:
        rows = s.scalars(
            select(Order).options(joinedload(Order.customer)).order_by(Order.id).limit(8)
        ).unique()
        return [o.customer.name for o in rows]


@app.get("/orders/in-list")
def orders_in_list() -> int:
    with Session(engine) as s:
        return len(s.scalars(select(Order).where(Order.id.in_(list(range(1, 15))))).all())


@app.post("/orders/bulk")
def orders_bulk() -> int:
    with engine.begin() as conn:
        conn.execute(insert(Customer), [{"name": f"bulk {i}"} for i in range(10)])
    return 10


@app.get("/orders/different")
def orders_different() -> int:
    with engine.connect() as conn:
        for table in ("customers", "orders", "customers c", "orders o", "customers cc", "orders oo"):
            conn.execute(text(f"SELECT count(*) FROM {table}"))
    return 6


@app.get("/orders/broken")
def orders_broken() -> str:
    """A statement the database refuses; the endpoint reports it rather than failing."""
    from sqlalchemy.exc import DBAPIError

    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM customers"))
        try:
            conn.execute(text("SELECT id FROM no_such_table WHERE code = 'hunter2-literal'"))
        except DBAPIError as exc:
            return type(exc.orig).__qualname__
    return "no error"


@app.get("/secret-search")
def secret_search(q: str = "") -> int:
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM customers WHERE name = 'hunter2-secret-literal'"))
        return len(q)


@app.get("/slow")
async def slow(ms: float = 300) -> dict[str, float]:
    await asyncio.sleep(ms / 1000)
    return {"ms": ms}


@app.get("/slow-query")
def slow_query() -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_sleep(0.25)"))
        else:
            conn.execute(
                text(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) "
                    "SELECT count(*) FROM c"
                )
            )
    return 1


@app.get("/blocking")
async def blocking() -> dict[str, str]:
    time.sleep(0.3)
    return {"blocked": "yes"}


_spawned: set[asyncio.Task[None]] = set()


async def _block_later() -> None:
    await asyncio.sleep(0.4)  # the request that started this task has ended by then
    time.sleep(0.3)


@app.get("/spawns-blocker")
async def spawns_blocker() -> dict[str, str]:
    """Starts a task that blocks the loop after this request ended (it copies our context)."""
    task = asyncio.get_running_loop().create_task(_block_later())
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)
    return {"spawned": "yes"}


async def blocking_job() -> None:
    time.sleep(0.3)


@app.get("/background-blocker")
async def background_blocker() -> Response:
    """A background task (on the loop, after the response) that blocks it: the job's doing."""
    from starlette.background import BackgroundTask

    return Response("queued", background=BackgroundTask(blocking_job))


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/log")
def write_log() -> dict[str, str]:
    log.warning("inside the request")
    return {"logged": otel_perf.current_trace_id()}


@app.get("/call-peer")
def call_peer(style: str = "client") -> dict[str, Any]:
    url = f"{PEER}/items/3"
    if style == "module":
        status = httpx.get(url).status_code
    else:
        with httpx.Client() as client:
            status = client.get(url).status_code
    return {"peer_status": status}


@app.get("/call-peer-async")
async def call_peer_async() -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{PEER}/items/4")
    return {"peer_status": response.status_code}


@app.get("/upstream/quota")
async def upstream_quota() -> Response:
    QUOTA["left"] -= 1
    left = max(QUOTA["left"], 0)
    headers = {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": str(left), "X-RateLimit-Reset": "30"}
    if QUOTA["left"] < 0:
        return Response("slow down", status_code=429, headers={**headers, "Retry-After": "30"})
    return Response("ok", headers=headers)


@app.get("/call-upstream")
async def call_upstream() -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{PEER}/upstream/quota")
    return {"status": response.status_code}


# --- Every HTTP client (issue 17): GET PEER + path with each, from a sync or an async endpoint. ------
_pool = urllib3.PoolManager()


@app.get("/outgoing/{client}")
def outgoing(client: str, path: str = "/items/3") -> dict[str, int]:
    """GET ``PEER + path`` with a synchronous client; the peer's status (a 429 included)."""
    url = PEER + path
    if client == "requests":
        return {"status": requests.get(url, timeout=10).status_code}
    if client == "requests-session":
        with requests.Session() as session:
            return {"status": session.get(url, timeout=10).status_code}
    if client == "urllib3":
        # No retries: urllib3 would honour a 429's Retry-After (30 s) before answering.
        return {"status": _pool.request("GET", url, timeout=10, retries=False).status}
    if client == "urllib":
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return {"status": response.status}
        except urllib.error.HTTPError as exc:
            with exc:
                return {"status": exc.code}
    return {"status": -1}


@app.get("/outgoing-async/aiohttp")
async def outgoing_aiohttp(path: str = "/items/3", raise_for_status: bool = False) -> dict[str, int]:
    async with aiohttp.ClientSession(raise_for_status=raise_for_status) as session:
        try:
            async with session.get(PEER + path) as response:
                await response.read()
                return {"status": response.status}
        except aiohttp.ClientResponseError as exc:
            return {"status": exc.status}


_redis: Any = None


@app.get("/redis/{key}")
def redis_roundtrip(key: str) -> dict[str, Any]:
    global _redis
    import redis

    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["APP_REDIS_URL"])
    _redis.set(f"svc:{key}", key)
    value = _redis.get(f"svc:{key}")
    return {"value": value.decode() if value is not None else None}


tasks_created = otel_perf.counter("tasks.created", unit="{task}", dimensions=["status"])
sync_events = otel_perf.histogram("calendar.sync.events", unit="{event}", dimensions=["provider"])


@app.post("/tasks")
async def create_task(priority: str = "low", customer: str = "c1") -> dict[str, str]:
    """measure() with dimensions, a counter and a histogram of the app's own values."""
    attributes = {"priority": priority, "customer.id": customer}
    async with otel_perf.measure("tasks.create", attributes, dimensions=["priority", "status"]) as m:
        m.set_attribute("status", "created")
    tasks_created.add(1, status="created")
    sync_events.record(len(customer) * 10, provider=priority)
    return {"status": "created"}


@app.get("/private")
async def private() -> Response:
    """Always 401: a client error, not a server error."""
    return Response('{"detail": "not authenticated"}', status_code=401, media_type="application/json")


@app.get("/job")
def job() -> dict[str, str]:
    run_job()
    return {"ok": "yes"}


@otel_perf.measure("jobs.report")
def run_job() -> None:
    with Session(engine) as s:
        for i in range(1, 7):
            s.execute(select(Customer.name).where(Customer.id == i)).all()


@app.get("/measured-failure")
async def measured_failure() -> dict[str, str]:
    try:
        async with otel_perf.measure("tasks.create"):
            raise ValueError("nope")
    except ValueError:
        return {"failed": "yes"}


small_engine = create_engine(os.environ["APP_DATABASE_URL"], pool_size=1, max_overflow=0, pool_timeout=0.3)


@app.get("/pool/hold")
def pool_hold(ms: float = 800) -> dict[str, str]:
    with small_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        time.sleep(ms / 1000)
    return {"held": "yes"}


@app.get("/pool/use")
def pool_use() -> dict[str, str]:
    try:
        with small_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # sqlalchemy.exc.TimeoutError when the pool is exhausted
        return {"error": type(exc).__name__}
    return {"error": ""}


@app.get("/pool/checked-out")
def pool_checked_out() -> int:
    return int(small_engine.pool.checkedout())  # type: ignore[attr-defined]


# --- Data safety (issue 7): secrets in SQL literals, bound values, errors and headers. --------------
# Every secret carries the marker S3KR1T, which appears in no route, so tests can search for it.


@app.post("/secret-insert")
def secret_insert() -> int:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (name) VALUES ('insert-S3KR1T-literal')"))
        conn.execute(text("INSERT INTO customers (name) VALUES (:name)"), {"name": "bound-S3KR1T-value"})
    return 2


@app.get("/secret-repeat")
def secret_repeat() -> int:
    with engine.connect() as conn:
        for i in range(6):
            statement = f"SELECT name FROM customers WHERE name = 'repeat-S3KR1T-{i}' AND id = {7319 + i}"
            conn.execute(text(statement))
    return 6


@app.get("/secret-error")
def secret_error() -> int:
    # Unhandled: uvicorn's "Exception in ASGI application" record (exported) quotes the
    # traceback's source lines, so the literal is built apart from them (see below).
    statement = text("SELECT * FROM no_such_table WHERE name = 'error-" + "S3KR1T-literal'")
    with engine.connect() as conn:
        conn.execute(statement)
    return 0


@app.get("/secret-error-logged")
def secret_error_logged() -> int:
    # Built apart from the execute() call: a traceback quotes that source line, and a secret
    # written in source code is code, not data the app handles.
    statement = text("SELECT * FROM no_such_table WHERE name = :n AND note = 'logged-" + "S3KR1T'")
    params = {"n": "param-" + "S3KR1T"}
    try:
        with engine.connect() as conn:
            conn.execute(statement, params)
    except Exception as exc:
        log.exception("query failed")
        log.error("query failed again: %s", exc)
    return 0


@app.get("/call-peer-with-secrets")
def call_peer_with_secrets() -> dict[str, int]:
    headers = {
        "Authorization": "Bearer outgoing-auth-S3KR1T",
        "Cookie": "sid=outgoing-cookie-S3KR1T",
        "X-Api-Key": "outgoing-apikey-S3KR1T",
        "Proxy-Authorization": "Basic outgoing-proxy-S3KR1T",
        "X-Custom-Token": "outgoing-custom-S3KR1T",
    }
    with httpx.Client() as client:
        r = client.get(f"{PEER}/set-cookie?token=outgoing-query-S3KR1T&page=1", headers=headers)
    return {"peer_status": r.status_code}


@app.get("/set-cookie")
def set_cookie() -> Response:
    return Response(
        "ok", headers={"Set-Cookie": "session=response-cookie-S3KR1T", "X-Api-Key": "response-apikey-S3KR1T"}
    )


@app.get("/weird-sql")
def weird_sql() -> dict[str, object]:
    """Non-ASCII SQL that runs, and SQL holding a lone surrogate (undecodable bytes) that cannot."""
    with engine.connect() as conn:
        rows = len(conn.execute(text('SELECT 1 AS "weird_ü_alias"')).all())
        try:
            conn.execute(text('SELECT 2 AS "weird_\udcff_alias"'))
            failed = ""
        except Exception as exc:
            failed = type(exc).__name__
    return {"rows": rows, "failed": failed}


# --- Routers included with prefixes, nested, and a mounted sub-application (issue 16). -------------
shop = APIRouter()


@shop.get("/items/{item_id}")
def shop_item(item_id: int) -> dict[str, int]:
    with Session(engine) as s:
        s.get(Order, item_id)
    return {"item": item_id}


v1 = APIRouter(prefix="/v1")
v1.include_router(shop, prefix="/shop")
v2 = APIRouter()
v2.include_router(shop, prefix="/shop")
app.include_router(v1, prefix="/api")
app.include_router(v2, prefix="/api/v2")

sub_app = FastAPI()


@sub_app.get("/ping/{name}")
async def sub_ping(name: str) -> dict[str, str]:
    return {"pong": name}


sub_app.include_router(shop, prefix="/nested")
app.mount("/sub", sub_app)


# --- Semantic conventions and drop-in behaviour (issue 20). ---------------------------------------
@app.websocket("/ws/{room}")
async def websocket_echo(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    with Session(engine) as s:
        s.get(Order, 1)
    text = await websocket.receive_text()
    await websocket.send_text(f"{room}:{text}")
    await websocket.close()


@app.get("/log-correlation")
def log_correlation() -> dict[str, object]:
    """The ids the official logging instrumentation's formats use (OTEL_PYTHON_LOG_CORRELATION)."""
    record = log.makeRecord("service", logging.INFO, __file__, 1, "x", (), None)
    return {k: getattr(record, k, None) for k in ("otelTraceID", "otelSpanID", "otelServiceName")}

