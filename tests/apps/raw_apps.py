"""Apps of no framework we instrument by route, and framework apps hidden inside other objects.

* ``wsgi_app`` / ``asgi_app``: plain callables (a hand-written WSGI app, a hand-written ASGI app);
* ``hidden_fastapi``: a FastAPI app inside an ASGI wrapper that keeps it where no middleware
  convention puts it (``.inner``), so only running it shows what it holds;
* ``hidden_flask``: the same for a Flask app inside a WSGI wrapper;
* ``dispatched_flask``: the Flask app mounted with werkzeug's DispatcherMiddleware.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

log = logging.getLogger("raw_apps")


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"missing"]
    if path == "/stream":  # 64 KiB chunks until the client goes away (or 100 were sent)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _chunks()
    log.info("raw wsgi %s", path)
    body = json.dumps({"path": path, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _chunks() -> Iterator[bytes]:
    for _ in range(100):
        time.sleep(0.02)
        yield b"x" * 65536


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope.get("path", "")
    log.info("raw asgi %s", path)
    body = json.dumps({"path": path, "pid": os.getpid()}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


fastapi_app = FastAPI()


@fastapi_app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id, "pid": os.getpid()}


class HiddenAsgi:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


hidden_fastapi = HiddenAsgi(fastapi_app)

flask_app = Flask("raw_flask")


@flask_app.get("/things/<int:thing_id>")
def thing(thing_id: int) -> dict[str, int]:
    return {"id": thing_id, "pid": os.getpid()}


class HiddenWsgi:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.inner(environ, start_response)


hidden_flask = HiddenWsgi(flask_app)
dispatched_flask = DispatcherMiddleware(wsgi_app, {"/sub": flask_app})
