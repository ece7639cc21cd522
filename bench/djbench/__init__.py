"""The Django benchmark app: the same three endpoints as app.py, plain Django, no telemetry code.

``/hello`` and ``/items/<int:item_id>`` return JSON and touch nothing else; ``/db`` runs three
ORM queries on SQLite (a customer by primary key, a count of their orders, their five most
recent orders).  Served by gunicorn (``djbench.wsgi``); ``BENCH_DB`` names the SQLite file,
created and seeded when the WSGI module is imported.  The package is both the project and
its one app (``djbench.models``).
"""
