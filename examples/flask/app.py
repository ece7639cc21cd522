"""A small Flask + Flask-SQLAlchemy app for trying otel-perf-instrument (see README.md). No telemetry code."""

from __future__ import annotations

import logging
import os

from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

log = logging.getLogger("shop")


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
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship()


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db")
db.init_app(app)


@app.get("/orders")
def orders():  # type: ignore[no-untyped-def]
    """N+1: each order's customer is loaded when first read, one query per row."""
    log.info("listing orders")
    rows = db.session.scalars(select(Order).order_by(Order.id).limit(20))
    return jsonify([{"id": o.id, "customer": o.customer.name} for o in rows])


@app.get("/orders/eager")
def orders_eager():  # type: ignore[no-untyped-def]
    """The fix: load the customers with the orders (one more query, not one per row)."""
    rows = db.session.scalars(
        select(Order).options(selectinload(Order.customer)).order_by(Order.id).limit(20)
    )
    return jsonify([{"id": o.id, "customer": o.customer.name} for o in rows])


@app.get("/orders/<int:order_id>")
def order(order_id: int):  # type: ignore[no-untyped-def]
    found = db.get_or_404(Order, order_id)
    return {"id": found.id, "customer": found.customer.name}


@app.cli.command("seed")
def seed() -> None:
    """Create the tables: twenty customers with one order each."""
    db.drop_all()
    db.create_all()
    db.session.add_all(Customer(id=i, name=f"Customer {i}") for i in range(1, 21))
    db.session.add_all(Order(id=i, customer_id=i) for i in range(1, 21))
    db.session.commit()
