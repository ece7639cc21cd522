"""An app that instruments itself with the official FastAPI instrumentor, as many do."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


FastAPIInstrumentor.instrument_app(app)
