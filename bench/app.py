"""The benchmark app: plain FastAPI + SQLAlchemy, no telemetry code.

``/hello`` and ``/items/{item_id}`` are trivial async endpoints (the framework and the
instrumentation are all there is to measure); ``/db`` is a sync endpoint, run in the
threadpool as in FastAPI's SQL tutorial, that runs three SQLAlchemy queries on SQLite.
``BENCH_DB`` names the SQLite file (default: one in the temp folder), created and seeded
at import.

For the scaling table (``run.py --scaling``): ``/stmts/{n}`` runs ``n`` primary-key queries
in one session, and ``BENCH_ROUTES=N`` adds ``N`` trivial routes ``/route0`` ... (after the
others, so the three endpoints above match as fast as without them).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import FastAPI
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    total: Mapped[int] = mapped_column()
    note: Mapped[str] = mapped_column(String(200))


_DB = os.environ.get("BENCH_DB") or os.path.join(tempfile.gettempdir(), f"otel-perf-bench-{os.getpid()}.db")
# Up to 16 concurrent requests run in the threadpool: give each a connection.
engine = create_engine(f"sqlite:///{_DB}", pool_size=20, max_overflow=0)
Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)
with Session(engine) as _s:
    _s.add_all(Customer(id=i, name=f"customer {i}") for i in range(1, 101))
    _s.flush()
    _s.add_all(
        Order(id=i, customer_id=1 + i % 100, total=i * 7 % 500, note=f"order {i}") for i in range(1, 2001)
    )
    _s.commit()

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, Any]:
    return {"id": item_id, "name": f"item {item_id}"}


@app.get("/db")
def db(customer_id: int = 7) -> dict[str, Any]:
    with Session(engine) as s:
        customer = s.get(Customer, customer_id)
        count = s.scalar(select(func.count(Order.id)).where(Order.customer_id == customer_id))
        recent = s.scalars(
            select(Order).where(Order.customer_id == customer_id).order_by(Order.id.desc()).limit(5)
        ).all()
        return {
            "customer": customer.name if customer else None,
            "orders": count,
            "recent": [{"id": o.id, "total": o.total} for o in recent],
        }


@app.get("/stmts/{n}")
def stmts(n: int) -> dict[str, int]:
    with Session(engine) as s:
        total = 0
        for i in range(n):
            total += s.scalar(select(Customer.id).where(Customer.id == 1 + i % 100)) or 0
        return {"n": n, "total": total}


async def _route() -> dict[str, str]:
    return {"route": "yes"}


for _i in range(int(os.environ.get("BENCH_ROUTES") or 0)):
    app.add_api_route(f"/route{_i}", _route, methods=["GET"], name=f"route{_i}")
