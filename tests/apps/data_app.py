"""A FastAPI app whose endpoints use the database drivers, Redis and BackgroundTasks directly.

Configured by environment variables the tests set: ``APP_SQLITE_PATH`` (a file), ``APP_PG_DSN``
(libpq DSN of the tests' PostgreSQL; the PostgreSQL endpoints answer 503 without it),
``APP_MYSQL_PORT`` (the tests' MariaDB, user root, database testdb), ``APP_REDIS_URL``,
``APP_BROKER_URL`` (Celery's broker, for ``/celery/send``).  Every endpoint
runs a known number of statements or commands, so tests can assert exact counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import JSONResponse

SQLITE_PATH = os.environ.get("APP_SQLITE_PATH", "")
PG_DSN = os.environ.get("APP_PG_DSN", "")
REDIS_URL = os.environ.get("APP_REDIS_URL", "")
MYSQL_PORT = int(os.environ.get("APP_MYSQL_PORT", "0") or 0)
ROWS = 10
log = logging.getLogger("data_app")
_state: dict[str, Any] = {}


def _sqlite() -> sqlite3.Connection:
    connection = sqlite3.connect(SQLITE_PATH)
    connection.create_function("sleep", 1, lambda seconds: time.sleep(seconds) or 0)
    return connection


def _setup_sqlite() -> None:
    with _sqlite() as c:
        c.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("DELETE FROM items")
        c.executemany("INSERT INTO items (id, name) VALUES (?, ?)", [(i, f"item {i}") for i in range(ROWS)])


def _setup_postgres() -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:  # outside any request: start-up statements
        c.execute("CREATE TABLE IF NOT EXISTS data_items (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("TRUNCATE data_items")
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO data_items (id, name) VALUES (%s, %s)", [(i, f"item {i}") for i in range(ROWS)]
            )


def _mysql() -> Any:
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=MYSQL_PORT, user="root", password="", database="testdb")


def _setup_mysql() -> None:
    connection = _mysql()
    try:
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS my_items (id INTEGER PRIMARY KEY, name TEXT)")
            cur.execute("DELETE FROM my_items")
            cur.executemany(
                "INSERT INTO my_items (id, name) VALUES (%s, %s)", [(i, f"item {i}") for i in range(ROWS)]
            )
        connection.commit()
    finally:
        connection.close()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    if PG_DSN:
        import asyncpg

        _state["pool"] = await asyncpg.create_pool(PG_DSN_URL(), min_size=1, max_size=2)
    yield
    pool = _state.pop("pool", None)
    if pool is not None:
        await pool.close()


def PG_DSN_URL() -> str:
    parts = dict(item.split("=", 1) for item in PG_DSN.split())
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


if SQLITE_PATH:
    _setup_sqlite()
if PG_DSN:
    _setup_postgres()
if MYSQL_PORT:
    _setup_mysql()
app = FastAPI(lifespan=lifespan)


def _need_pg() -> None:
    if not PG_DSN:
        raise HTTPException(503, "APP_PG_DSN is not set")


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


# --- sqlite3 ------------------------------------------------------------------------------------
@app.get("/sqlite/loop")
def sqlite_loop(n: int = 6) -> dict[str, Any]:
    """1 + n statements: the list, then one query per item (an N+1 when n >= 5)."""
    with _sqlite() as c:
        ids = [row[0] for row in c.execute("SELECT id FROM items ORDER BY id LIMIT ?", (n,))]
        cur = c.cursor()
        names = [cur.execute("SELECT name FROM items WHERE id = ?", (i,)).fetchone()[0] for i in ids]
    return {"names": names}


@app.get("/sqlite/slow")
def sqlite_slow() -> dict[str, Any]:
    with _sqlite() as c:
        c.execute("SELECT sleep(0.15)").fetchone()
    return {"slow": True}


# --- psycopg (sync and async) -----------------------------------------------------------------
@app.get("/psycopg/loop")
def psycopg_loop(n: int = 6) -> dict[str, Any]:
    _need_pg()
    import psycopg

    with psycopg.connect(PG_DSN) as c:
        ids = [row[0] for row in c.execute("SELECT id FROM data_items ORDER BY id LIMIT %s", (n,))]
        with c.cursor() as cur:
            names = []
            for i in ids:
                cur.execute("SELECT name FROM data_items WHERE id = %s", (i,))
                names.append(cur.fetchone()[0])  # type: ignore[index]
    return {"names": names}


@app.get("/psycopg/slow")
def psycopg_slow() -> dict[str, Any]:
    _need_pg()
    import psycopg

    with psycopg.connect(PG_DSN) as c:
        c.execute("SELECT pg_sleep(0.15)")
    return {"slow": True}


@app.get("/psycopg-async/loop")
async def psycopg_async_loop(n: int = 6) -> dict[str, Any]:
    _need_pg()
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_DSN) as c:
        cur = await c.execute("SELECT id FROM data_items ORDER BY id LIMIT %s", (n,))
        ids = [row[0] for row in await cur.fetchall()]
        names = []
        async with c.cursor() as cur2:
            for i in ids:
                await cur2.execute("SELECT name FROM data_items WHERE id = %s", (i,))
                names.append((await cur2.fetchone())[0])  # type: ignore[index]
    return {"names": names}


@app.get("/mixed")
def mixed() -> dict[str, Any]:
    """One statement through SQLAlchemy (over psycopg) and one raw psycopg statement: 2 in all."""
    _need_pg()
    import psycopg
    from sqlalchemy import create_engine, text

    engine = _state.get("engine")
    if engine is None:
        engine = _state["engine"] = create_engine(
            "postgresql+psycopg://" + PG_DSN_URL().removeprefix("postgresql://")
        )
    with engine.connect() as conn:
        first = conn.execute(text("SELECT count(*) FROM data_items")).scalar()
    with psycopg.connect(PG_DSN) as c:
        second = c.execute("SELECT max(id) FROM data_items").fetchone()[0]  # type: ignore[index]
    return {"count": first, "max": second}


@app.get("/sqlalchemy/sqlite")
def sqlalchemy_sqlite() -> dict[str, Any]:
    """Three SELECTs of items through SQLAlchemy over sqlite3 (which must record each once)."""
    from sqlalchemy import create_engine, text

    engine = _state.get("sqlite_engine")
    if engine is None:
        engine = _state["sqlite_engine"] = create_engine(f"sqlite:///{SQLITE_PATH}")
    with engine.connect() as conn:
        query = text("SELECT name FROM items WHERE id = :id")
        names = [conn.execute(query, {"id": i}).scalar() for i in range(3)]
    return {"names": names}


# --- PyMySQL ------------------------------------------------------------------------------------
@app.get("/pymysql/loop")
def pymysql_loop(n: int = 6) -> dict[str, Any]:
    import pymysql.cursors

    connection = _mysql()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT id FROM my_items ORDER BY id LIMIT %s", (n,))
            ids = [row[0] for row in cur.fetchall()]
        with connection.cursor(pymysql.cursors.DictCursor) as cur:  # a cursor class of one's own
            names = []
            for i in ids:
                cur.execute("SELECT name FROM my_items WHERE id = %s", (i,))
                names.append(cur.fetchone()["name"])  # type: ignore[index]
    finally:
        connection.close()
    return {"names": names}


@app.get("/pymysql/slow")
def pymysql_slow() -> dict[str, Any]:
    connection = _mysql()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT SLEEP(0.15)")
    finally:
        connection.close()
    return {"slow": True}


# --- asyncpg ------------------------------------------------------------------------------------
@app.get("/asyncpg/loop")
async def asyncpg_loop(n: int = 6) -> dict[str, Any]:
    _need_pg()
    async with _state["pool"].acquire() as c:
        ids = [r["id"] for r in await c.fetch("SELECT id FROM data_items ORDER BY id LIMIT $1", n)]
        names = [await c.fetchval("SELECT name FROM data_items WHERE id = $1", i) for i in ids]
    return {"names": names}


@app.get("/asyncpg/slow")
async def asyncpg_slow() -> dict[str, Any]:
    _need_pg()
    async with _state["pool"].acquire() as c:
        await c.execute("SELECT pg_sleep(0.15)")
    return {"slow": True}


# --- Redis --------------------------------------------------------------------------------------
@app.get("/redis/sequence")
def redis_sequence() -> dict[str, Any]:
    """A scripted cache sequence: 6 hits and 5 misses (see the comments), 11 commands + 1 pipeline."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.set("cache:a", "1")  # not a read
    r.set("cache:b", "2")  # not a read
    r.get("cache:a")  # hit
    r.get("cache:missing")  # miss
    r.mget("cache:a", "cache:b", "cache:nope")  # 2 hits, 1 miss
    r.hset("cache:h", "f", "v")  # not a read
    r.hget("cache:h", "f")  # hit
    r.hget("cache:h", "g")  # miss
    r.hgetall("cache:empty")  # miss
    r.exists("cache:a", "cache:none")  # 1 hit, 1 miss
    with r.pipeline(transaction=False) as p:
        p.get("cache:b")  # hit
        p.delete("cache:gone")  # not a read
        p.execute()
    r.close()
    return {"done": True}


@app.get("/redis/async")
async def redis_async() -> dict[str, Any]:
    """Async client: 1 hit, 1 miss."""
    import redis.asyncio

    r = redis.asyncio.Redis.from_url(REDIS_URL)
    await r.set("cache:async", "x")
    await r.get("cache:async")
    await r.get("cache:async-missing")
    await r.aclose()
    return {"done": True}


# --- BackgroundTasks ---------------------------------------------------------------------------
def send_report(n: int) -> None:
    """A 0.3 s job with an N+1 inside: 1 + n statements."""
    time.sleep(0.3)
    with _sqlite() as c:
        ids = [row[0] for row in c.execute("SELECT id FROM items ORDER BY id LIMIT ?", (n,))]
        for i in ids:
            c.execute("SELECT name FROM items WHERE id = ?", (i,)).fetchone()
    log.info("report sent")


async def notify() -> None:
    await asyncio.sleep(0.01)


@app.get("/background")
def background(tasks: BackgroundTasks, n: int = 6) -> dict[str, Any]:
    tasks.add_task(send_report, n)
    tasks.add_task(notify)
    return {"queued": 2}


@app.get("/background/fails")
def background_fails(tasks: BackgroundTasks) -> dict[str, Any]:
    tasks.add_task(failing_job)
    return {"queued": 1}


@app.get("/background/unavailable")
def background_unavailable(tasks: BackgroundTasks) -> JSONResponse:
    """A 503 answered on purpose, with a task queued to retry later (it runs after the response)."""
    tasks.add_task(send_report, 2)
    return JSONResponse({"retry_after": 1}, status_code=503)


def failing_job() -> None:
    raise RuntimeError("the job failed")


# --- Celery (the producer side) ----------------------------------------------------------------
@app.get("/celery/send")
def celery_send(n: int = 6) -> dict[str, Any]:
    from celery_tasks import lookup_items

    result = lookup_items.delay(n)
    return {"task_id": result.id}


@app.get("/celery/fail")
def celery_fail() -> dict[str, Any]:
    from celery_tasks import fails

    return {"task_id": fails.delay().id}
