"""Opt-in per-request extras of the server core: the access log, the end user and the tenant.

* ``OTEL_PERF_ACCESS_LOG=true``: one log record per request on the ``otel_perf.access``
  logger, which the JSON log format writes as one line: method, route, status, duration, SQL
  statements and time, response size, user and tenant when known, and the request's trace and
  span ids (the record is made inside the request's context); exported over OTLP like every
  record.
* ``OTEL_PERF_ENDUSER_FROM`` / ``OTEL_PERF_TENANT_FROM`` (``header:<name>`` or
  ``baggage:<key>``): the value goes on the SERVER span as ``enduser.id`` / ``tenant.id``,
  on every log record made during the request and on its access-log line.  Never a metric
  attribute, unless ``OTEL_PERF_TENANT_METRIC_VALUES`` bounds the tenants: then
  ``perf.tenant.request.duration`` is recorded by ``tenant.id`` for that many tenants (later
  ones are ``_OTHER``, counted).

The server core (:class:`~otel_perf._core.server.ServerCore`) takes these in only while one
of them is on: it then swaps in a ``finish`` that calls :class:`RequestExtras`,
so a request pays nothing for them while they are off.  Framework adapters that inline the
request prologue identify the user and tenant themselves: the ASGI middleware wraps the app
with :meth:`RequestExtras.asgi`, the WSGI handler calls :meth:`RequestExtras.identify`.  The
response size is the one the adapter hands to ``finish`` (the access log reads it from
``work.response_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage
from opentelemetry import context as otel_context

from otel_perf import _names as n
from otel_perf._core import guard
from otel_perf._core.work import Work, current_work

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

access_logger = logging.getLogger("otel_perf.access")
#: Longest user or tenant value kept.
MAX_ID = 128
ENDUSER = "enduser.id"
TENANT = "tenant.id"
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
_factory_installed: list[bool] = []


def parse_source(text: str) -> tuple[str, str] | None:
    """``header:X-User-Id`` -> ("header", "x-user-id"); ``baggage:user.id`` -> ("baggage", "user.id")."""
    kind, sep, name = text.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in ("header", "baggage") or not name or any(c.isspace() for c in name):
        return None
    return kind, name.lower() if kind == "header" else name


def _clean(value: Any) -> str:
    text = str(value)[:MAX_ID]
    return text if text.isprintable() else ""


class RequestExtras:
    """What the opt-in features need per request; built once per server core."""

    def __init__(self, runtime: Runtime) -> None:
        cfg = runtime.config
        self.rt = runtime
        self.access_log = cfg.flag("OTEL_PERF_ACCESS_LOG")
        self.enduser = parse_source(cfg.text("OTEL_PERF_ENDUSER_FROM"))
        self.tenant = parse_source(cfg.text("OTEL_PERF_TENANT_FROM"))
        limit = int(cfg.number("OTEL_PERF_TENANT_METRIC_VALUES"))
        self.tenant_metric: Any = None
        self.dimensions: Any = None
        if self.tenant is not None and limit > 0:
            from otel_perf._metrics.dimensions import Dimensions
            from otel_perf._metrics.instruments import Histogram

            found = runtime.registry.get(n.TENANT_DURATION)
            self.tenant_metric = found if isinstance(found, Histogram) else runtime.registry.histogram(
                n.TENANT_DURATION, "s", "Duration of HTTP server requests by tenant (bounded).",
                (n.A_TENANT, n.A_ERROR_TYPE),
            )  # fmt: skip
            self.dimensions = Dimensions(runtime.registry, limit)
        if self.enduser is not None or self.tenant is not None:
            _install_record_factory()

    @property
    def identifies(self) -> bool:
        return self.enduser is not None or self.tenant is not None

    # -- start of a request ----------------------------------------------------------------

    def identify(self, work: Work, header: Callable[[str], str | None]) -> None:
        """Take the user and tenant of the request now running (``header(name)``: one header's value)."""
        try:
            for source, slot in ((self.enduser, "enduser"), (self.tenant, "tenant")):
                if source is None:
                    continue
                kind, name = source
                if kind == "header":
                    raw: Any = header(name)
                else:
                    raw = baggage.get_baggage(name, otel_context.get_current())
                value = _clean(raw) if raw else ""
                if value:
                    setattr(work, slot, value)
        except Exception as exc:
            guard.internal_error("server.identify", exc)

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` wrapped so each traced request is identified."""
        return _ExtrasApp(app, self)

    # -- end of a request ------------------------------------------------------------------

    def before_finish(self, work: Work) -> None:
        """On the span, while it records: the user and tenant."""
        span = work.span
        if not span.is_recording():
            return
        user, tenant = getattr(work, "enduser", ""), getattr(work, "tenant", "")
        if user:
            span.set_attribute(ENDUSER, user)
        if tenant:
            span.set_attribute(TENANT, tenant)

    def after_finish(self, work: Work, route: str, status: int, error_type: str, seconds: float) -> None:
        """The tenant metric and the access-log line (still inside the request's context)."""
        try:
            tenant = getattr(work, "tenant", "")
            if self.tenant_metric is not None:
                value = self.dimensions.bounded(n.TENANT_DURATION, TENANT, tenant) if tenant else ""
                self.tenant_metric.record(seconds, (value, error_type))
            if self.access_log:
                self._log(work, route, status, error_type, seconds)
        except Exception as exc:
            guard.internal_error("server.access_log", exc)

    def _log(self, work: Work, route: str, status: int, error_type: str, seconds: float) -> None:
        shown = route or "(unmatched)"
        size = getattr(work, "response_size", None)
        extra: dict[str, Any] = {
            n.A_METHOD: work.method,
            n.A_ROUTE: shown,
            n.A_STATUS: status,
            "perf.duration_ms": round(seconds * 1000.0, 3),
            n.A_PERF_QUERY_COUNT: work.query_count,
            "perf.db.duration_ms": round(work.db_time * 1000.0, 3),
            "http.response.body.size": size,
        }
        if error_type:
            extra[n.A_ERROR_TYPE] = error_type
        # The record is made inside the request's context: it carries its trace_id and span_id,
        # and (the record factory of this module) its enduser.id and tenant.id.
        access_logger.info(
            "%s %s %s %.1f ms", work.method, shown, status, seconds * 1000.0, extra=extra
        )


class _ExtrasApp:
    """The traced app of the ASGI middleware, with the request identified (the middleware's own
    ``send`` counts the response's bytes and hands them to the server core)."""

    __slots__ = ("app", "extras")

    def __init__(self, app: ASGIApp, extras: RequestExtras) -> None:
        self.app = app
        self.extras = extras

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        work = current_work.get(None) if scope.get("type") == "http" else None
        if work is None or work.kind != "request":  # not traced (excluded URL, websocket)
            await self.app(scope, receive, send)
            return
        extras = self.extras
        if extras.identifies:
            headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()

            def header(name: str) -> str | None:
                key = name.encode("latin-1")
                for k, v in headers:
                    if k == key:
                        return v.decode("latin-1")
                return None

            extras.identify(work, header)
        await self.app(scope, receive, send)


def _install_record_factory() -> None:
    """Every log record made during a request gets its ``enduser.id`` and ``tenant.id`` (once per process)."""
    if _factory_installed:
        return
    _factory_installed.append(True)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        work = current_work.get(None)
        if work is not None:
            user, tenant = getattr(work, "enduser", ""), getattr(work, "tenant", "")
            if user:
                setattr(record, ENDUSER, user)
            if tenant:
                setattr(record, TENANT, tenant)
        return record

    logging.setLogRecordFactory(factory)


def build(runtime: Runtime) -> RequestExtras | None:
    """The extras of ``runtime``, or None when every one is off (the request path then pays nothing)."""
    cfg = runtime.config
    on = (
        cfg.flag("OTEL_PERF_ACCESS_LOG")
        or bool(cfg.text("OTEL_PERF_ENDUSER_FROM"))
        or bool(cfg.text("OTEL_PERF_TENANT_FROM"))
    )
    return RequestExtras(runtime) if on else None
