"""The Flask benchmark app: the same three endpoints as app.py, Flask 3 + Flask-SQLAlchemy.

``/hello`` and ``/items/<int:item_id>`` return JSON; ``/db`` runs three queries through the
Flask-SQLAlchemy session on SQLite (a customer by primary key, a count of their orders, their
five most recent orders).  Served by gunicorn (``flask_bench:app``); ``BENCH_DB`` names the
SQLite file, created and seeded at import.  No telemetry code.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Customer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    total: Mapped[int] = mapped_column()
    note: Mapped[str] = mapped_column(String(200))


_DB = os.environ.get("BENCH_DB") or os.path.join(
    tempfile.gettempdir(), f"otel-perf-bench-flask-{os.getpid()}.db"
)
app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{_DB}"
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 20, "max_overflow": 0}
db.init_app(app)

with app.app_context():
    db.drop_all()
    db.create_all()
    db.session.add_all(Customer(id=i, name=f"customer {i}") for i in range(1, 101))
    db.session.flush()
    db.session.add_all(
        Order(id=i, customer_id=1 + i % 100, total=i * 7 % 500, note=f"order {i}") for i in range(1, 2001)
    )
    db.session.commit()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, Any]:
    return {"id": item_id, "name": f"item {item_id}"}


@app.get("/db")
def orders() -> dict[str, Any]:
    customer_id = int(request.args.get("customer_id", 7))
    customer = db.session.get(Customer, customer_id)
    count = db.session.scalar(select(func.count(Order.id)).where(Order.customer_id == customer_id))
    recent = db.session.scalars(
        select(Order).where(Order.customer_id == customer_id).order_by(Order.id.desc()).limit(5)
    ).all()
    return {
        "customer": customer.name if customer else None,
        "orders": count,
        "recent": [{"id": o.id, "total": o.total} for o in recent],
    }
