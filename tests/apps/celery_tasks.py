"""A Celery app for the tests: a Redis broker (``APP_BROKER_URL``), no result backend.

``lookup_items(n)`` runs 1 + n sqlite3 statements (an N+1 for n >= 5) on ``APP_SQLITE_PATH``
and logs one record through a task logger (which Celery does not propagate to the root logger).
"""

from __future__ import annotations

import os
import sqlite3

from celery import Celery
from celery.utils.log import get_task_logger

app = Celery("celery_tasks", broker=os.environ.get("APP_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
)
log = get_task_logger(__name__)


@app.task(name="data.lookup_items")
def lookup_items(n: int) -> int:
    with sqlite3.connect(os.environ["APP_SQLITE_PATH"]) as c:
        ids = [row[0] for row in c.execute("SELECT id FROM items ORDER BY id LIMIT ?", (n,))]
        for i in ids:
            c.execute("SELECT name FROM items WHERE id = ?", (i,)).fetchone()
    log.info("looked up %d items", len(ids))
    return len(ids)


@app.task(name="data.fails")
def fails() -> None:
    raise ValueError("task failed on purpose")
