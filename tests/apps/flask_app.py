"""Sample Flask 3 + Flask-SQLAlchemy app for the end-to-end tests: no telemetry code.

``APP_DATABASE_URL`` is the SQLAlchemy URL.  ``python -c "import flask_app; flask_app.seed()"``
creates and fills the tables (once, before the servers start); ``python flask_app.py`` serves
it with werkzeug's server on ``APP_PORT``.
"""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, Response, jsonify, stream_with_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

log = logging.getLogger("flask_app")

# Its default model class: Flask-SQLAlchemy 3.0 (what fits SQLAlchemy 2.0.0, the oldest the version
# matrix runs) takes no DeclarativeBase subclass as model_class; typed columns work either way.
db = SQLAlchemy()


class Customer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    note: Mapped[str] = mapped_column(String(200))
    customer: Mapped[Customer] = relationship(lazy="select")


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["APP_DATABASE_URL"]
db.init_app(app)
api = Blueprint("api", __name__, url_prefix="/api/v1")


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/orders")
def orders() -> Response:
    """N+1: each order's customer is loaded on first access, one query per order."""
    rows = db.session.scalars(select(Order).order_by(Order.id).limit(10)).all()
    return jsonify([{"id": o.id, "customer": o.customer.name} for o in rows])


@app.get("/orders/eager")
def orders_eager() -> Response:
    rows = db.session.scalars(
        select(Order).options(selectinload(Order.customer)).order_by(Order.id).limit(10)
    )
    return jsonify([{"id": o.id, "customer": o.customer.name} for o in rows])


@app.get("/orders/<int:order_id>")
def order(order_id: int) -> Response:
    found = db.get_or_404(Order, order_id)
    return jsonify({"id": found.id, "note": found.note, "pid": os.getpid()})


@app.get("/slow-query")
def slow_query() -> dict[str, bool]:
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_sleep(0.15)"))
    else:
        db.session.execute(
            text(
                "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < 1000000) "
                "SELECT count(*) FROM cnt"
            )
        )
    return {"slow": True}


@app.get("/log")
def log_line() -> dict[str, bool]:
    log.info("flask log line")
    return {"logged": True}


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("the view failed")


@app.get("/secret-error")
def secret_error() -> str:
    # The URL is built apart from the raise: a traceback quotes that source line.
    url = "https://peer.invalid/v1/orders?page=2&token=" + "flask-S3KR1T"
    raise RuntimeError(f"the peer refused {url}")


@app.get("/pid")
def pid() -> dict[str, int]:
    log.info("serving pid")
    return {"pid": os.getpid()}


@app.get("/stream")
def stream() -> Response:
    """A streaming body that queries while it is sent (stream_with_context keeps the session)."""

    def rows():  # type: ignore[no-untyped-def]
        for o in db.session.scalars(select(Order).order_by(Order.id).limit(3)):
            yield f"{o.id}: {o.note}\n"

    return Response(stream_with_context(rows()), mimetype="text/plain")


@api.get("/customers/<int:customer_id>")
def customer(customer_id: int) -> dict[str, object]:
    found = db.get_or_404(Customer, customer_id)
    return {"id": found.id, "name": found.name}


app.register_blueprint(api)


def seed() -> None:
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.add_all(Customer(id=i, name=f"customer {i}") for i in range(1, 11))
        db.session.flush()
        db.session.add_all(Order(id=i, customer_id=i, note=f"order {i}") for i in range(1, 21) if i <= 10)
        db.session.add_all(Order(id=i, customer_id=i - 10, note=f"order {i}") for i in range(11, 21))
        db.session.commit()


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["APP_PORT"]))
