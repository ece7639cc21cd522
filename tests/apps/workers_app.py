"""Sample app for the process-model tests: no shared state between workers, no telemetry code.

Each process keeps its own in-memory SQLite database, so any number of workers (forked,
spawned or reloaded) start and serve independently.  ``python workers_app.py`` serves it
with ``uvicorn.run`` on ``APP_PORT``.
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool

#: The reload test rewrites this line and checks the new value is served.
VERSION = "v1"

log = logging.getLogger("workers_app")
engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
with engine.begin() as _conn:
    _conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
    _conn.execute(text("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')"))

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict[str, object]:
    log.info("fetching item %s", item_id)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).first()
    return {"id": item_id, "name": row[0] if row else None, "pid": os.getpid()}


@app.get("/work/{ms}")
async def work(ms: int) -> dict[str, object]:
    """Takes about ``ms`` milliseconds (the whole-service stats tests spread durations over buckets)."""
    await asyncio.sleep(ms / 1000.0)
    return {"ms": ms, "pid": os.getpid()}


@app.get("/version")
async def version() -> dict[str, object]:
    return {"version": VERSION, "pid": os.getpid()}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="info")
