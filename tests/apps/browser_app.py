"""A page with the browser script, for the Chromium end-to-end tests: no telemetry code.

``GET /`` is an HTML page with the one-line set-up (``<script src="/_otel_perf/browser.js" defer>``)
under a strict Content-Security-Policy (no inline script, no eval; ``connect-src`` allows the
collector URL from ``APP_COLLECTOR``), and ``/page.js`` fetches ``/api/items/7`` once the DOM is
ready and shows the answer in ``#out``; the button asks again with an XMLHttpRequest (``#xhr``).
``/api/items/{item_id}`` runs one SQL query.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["APP_DATABASE_URL"])
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)"))
    conn.execute(text("INSERT OR REPLACE INTO items VALUES (7, 'seven')"))

COLLECTOR = os.environ.get("APP_COLLECTOR", "")
CSP = f"default-src 'self'; script-src 'self'; connect-src 'self' {COLLECTOR}".strip()
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Orders</title>
<script src="/_otel_perf/browser.js" defer></script>
<script src="/page.js" defer></script>
</head><body>
<h1 id="title">Orders</h1>
<p>Every order placed this week, with the customer who placed it and what it is waiting for.</p>
<button id="go">Refresh</button>
<p>Item: <span id="out">loading</span> <span id="xhr"></span></p>
</body></html>
"""
SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  fetch('/api/items/7').then(function (r) { return r.json(); }).then(function (item) {
    document.getElementById('out').textContent = item.name;
  });
  document.getElementById('go').addEventListener('click', function () {
    document.getElementById('title').textContent = 'Orders (refreshed)';
    var xhr = new XMLHttpRequest();
    xhr.open('GET', '/api/items/7?via=xhr');
    xhr.onload = function () {
      document.getElementById('xhr').textContent = JSON.parse(xhr.responseText).name;
    };
    xhr.send();
  });
});
"""

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"content-security-policy": CSP})


@app.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)


@app.get("/page.js")
async def page_js() -> Response:
    return Response(SCRIPT, media_type="text/javascript")


@app.get("/api/items/{item_id}")
def item(item_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, name FROM items WHERE id = :id"), {"id": item_id}).one()
    return {"id": row.id, "name": row.name}
