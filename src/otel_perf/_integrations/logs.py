"""Trace-correlated logs.

Every ``logging.LogRecord`` created while a span is current gets ``trace_id`` and
``span_id`` attributes (hex; empty outside a request) through a wrapped record factory,
so any formatter can use ``%(trace_id)s``.  ``OTEL_PERF_LOG_FORMAT=json`` (the default:
what log pipelines such as Loki, Elasticsearch and Cloud Logging ingest) installs a root
handler writing one JSON object per line; ``text`` a plain line with the ids; ``off``
leaves logging configuration alone.  The handler goes on the root logger at startup,
before the app runs.  An app that later calls ``logging.basicConfig(level=...)`` keeps it and
gets its level; one whose ``basicConfig`` says where or how to write (``stream``, ``filename``,
``handlers``, ``format``, ``force``...) gets what it asked for, as without us
(:func:`_basic_config`); one that calls ``logging.config.dictConfig``/``fileConfig`` replaces it
(their handlers write the lines; records still carry the ids).  After such a call the OTLP
handler goes back on the root and on the loggers it made stop at themselves, and our loggers are
enabled again (:func:`_after_app_config`).
An unconfigured root logger (level WARNING) is lowered to INFO so the app's INFO records
reach the pipeline.  With ``OTEL_LOGS_EXPORTER=otlp`` records are also sent over OTLP.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from otel_perf._core import guard
from otel_perf._core.imports import when_imported
from otel_perf._core.patching import Patches
from otel_perf._core.server import failed_request

_MARK = "_otel_perf_handler"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "trace_id",
    "span_id",
    "otelTraceID",
    "otelSpanID",
    "otelServiceName",
    "otelTraceSampled",
    "taskName",
}
_state: dict[str, Any] = {}
_patches = Patches("logging")


def install_record_factory(service_name: str, correlation: bool = False) -> None:
    """Give every new record ``trace_id``, ``span_id`` and ``service_name`` attributes.

    ``correlation`` (``OTEL_PYTHON_LOG_CORRELATION=true``): also the official logging
    instrumentation's ``otelTraceID``, ``otelSpanID``, ``otelServiceName`` and
    ``otelTraceSampled``, so log formats written for it keep working.
    """
    if "factory" in _state:
        return
    previous = logging.getLogRecordFactory()
    get_span = trace.get_current_span

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = get_span().get_span_context()
        if ctx.trace_id:
            trace_id = f"{ctx.trace_id:032x}"
            span_id = f"{ctx.span_id:016x}"
        else:
            failed = failed_request(record)
            trace_id = f"{failed.trace_id:032x}" if failed is not None else ""
            span_id = f"{failed.span_id:016x}" if failed is not None else ""
        record.trace_id = trace_id
        record.span_id = span_id
        record.service_name = service_name
        if correlation:
            record.otelTraceID = trace_id or "0"
            record.otelSpanID = span_id or "0"
            record.otelServiceName = service_name
            record.otelTraceSampled = bool(ctx.trace_flags.sampled)
        return record

    logging.setLogRecordFactory(factory)
    _state["factory"] = previous


class _RequestContextHandler(logging.Handler):
    """The OTLP handler, given the failed request's context for records outside any span.

    The SDK's handler reads the trace ids of a record from the current context; a server's
    error record about an exception that escaped a request is written after the request's
    context is gone.  Only such records (no current span, an exception tied to a request)
    take the extra step.
    """

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> bool:
        record = exportable(record)
        failed = failed_request(record) if record.exc_info else None
        if failed is None or trace.get_current_span().get_span_context().is_valid:
            return bool(self.inner.handle(record))
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(failed)))
        try:
            return bool(self.inner.handle(record))
        finally:
            otel_context.detach(token)

    def emit(self, record: logging.LogRecord) -> None:  # handle() does it all
        self.inner.emit(record)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
        super().close()


#: Types an OTLP log attribute may hold (with sequences and mappings of them).
_PRIMITIVES = (str, bool, int, float, bytes, type(None))


def _exportable_value(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PRIMITIVES):
        return True
    if depth >= 3:
        return False
    if isinstance(value, (list, tuple)):
        return all(_exportable_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k and _exportable_value(v, depth + 1) for k, v in value.items())
    return False


def exportable(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` as the OTLP handler may take it: ``extra`` values that are no attribute values dropped.

    Django's request logger passes ``extra={"request": request}``: the SDK would log "Invalid
    type <class 'WSGIRequest'> for attribute value" from inside the handler, which then
    reports "recursive logging" (one warning pair per 404).  Such values are left out of the
    exported record (a copy: other handlers still see them; the JSON lines show their repr).
    Never converted with ``str()``: a request's repr carries its query string.
    """
    bad = [k for k, v in vars(record).items() if k not in _STANDARD and not _exportable_value(v)]
    if not bad:
        return record
    clean = copy.copy(record)
    for key in bad:
        del clean.__dict__[key]
    return clean


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, ids, service, extras, exception."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
            "service.name": getattr(record, "service_name", self.service_name),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "service_name" and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)
                )
        if record.exc_info:
            exc_type = record.exc_info[0]
            out["exception"] = {
                "type": exc_type.__name__ if exc_type else "",
                "message": str(record.exc_info[1]),
                "stacktrace": "".join(traceback.format_exception(*record.exc_info)),
            }
        return json.dumps(out, default=repr, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
        )


def install_handlers(
    fmt: str, service_name: str, otlp_handler: logging.Handler | None, line_format: str = ""
) -> None:
    """Apply ``OTEL_PERF_LOG_FORMAT`` (``line_format``: a ``%``-style line instead of ours) and
    add the OTLP handler, idempotently."""
    root = logging.getLogger()
    if fmt in ("json", "text"):
        formatter: logging.Formatter = (
            logging.Formatter(line_format)
            if line_format
            else JsonFormatter(service_name) if fmt == "json" else TextFormatter()
        )
        ours = [h for h in root.handlers if getattr(h, _MARK, False)]
        if not ours:
            handler = logging.StreamHandler(sys.stderr)
            setattr(handler, _MARK, True)
            handler.setFormatter(formatter)
            root.addHandler(handler)
            if root.level == logging.WARNING:  # the untouched default: let the app's INFO through
                root.setLevel(logging.INFO)
            _state["stream"] = handler
    # Our own findings and warnings must be visible even if the app never configured logging.
    logging.getLogger("otel_perf").setLevel(logging.INFO)
    if otlp_handler is not None and not any(getattr(h, "_otel_perf_otlp", False) for h in root.handlers):
        wrapped = _RequestContextHandler(otlp_handler)
        wrapped._otel_perf_otlp = True  # type: ignore[attr-defined]
        root.addHandler(wrapped)
        _state["otlp"] = wrapped


def adopt(name: str, is_default: Any) -> None:
    """Make a server's own logger (``uvicorn``, ``gunicorn.error``) write like the app's.

    Servers configure their loggers not to propagate, with a text handler of their own, so
    their error records (with the traceback of a failed request) reached neither the JSON
    lines on stderr nor OTLP.  Their *default* stderr handlers (``is_default(handler)``; a
    log file or a logging config of your own is kept) are replaced by ours when
    ``OTEL_PERF_LOG_FORMAT`` is json or text, and our OTLP handler is added.  The logger
    keeps not propagating, so nothing is written twice, and a server that copies this
    logger's handlers to another (gunicorn's uvicorn worker class does, for
    ``uvicorn.error``) copies ours.
    """
    lg = logging.getLogger(name)
    stream = _state.get("stream")
    otlp = _state.get("otlp")
    for handler in list(lg.handlers):
        if stream is not None and is_default(handler):
            lg.removeHandler(handler)
            if stream not in lg.handlers:
                lg.addHandler(stream)
    if otlp is not None and otlp not in lg.handlers and not lg.propagate:
        lg.addHandler(otlp)


def reattach(lg: logging.Logger, replace_stderr: bool) -> None:
    """Give ``lg`` our handlers back after a framework reconfigured it (Celery's worker does).

    ``replace_stderr``: its handlers writing to stderr are the framework's defaults, replaced by
    our stream handler (JSON or text lines) when ``OTEL_PERF_LOG_FORMAT`` asks for one; handlers
    writing elsewhere (a log file) are kept.  The OTLP handler is added to the root logger and
    to loggers that do not propagate to it, so a record is exported once.
    """
    stream = _state.get("stream")
    otlp = _state.get("otlp")
    if stream is not None and replace_stderr:
        for handler in list(lg.handlers):
            if handler is not stream and _writes_to_stderr(handler):
                lg.removeHandler(handler)
        if stream not in lg.handlers:
            lg.addHandler(stream)
    if otlp is not None and otlp not in lg.handlers and (lg is logging.getLogger() or not lg.propagate):
        lg.addHandler(otlp)


def _writes_to_stderr(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    stream = getattr(handler, "stream", None)
    return stream is sys.__stderr__ or stream is sys.stderr or getattr(stream, "name", "") == "<stderr>"


def drop_default_handler(name: str, is_default: Any) -> None:
    """Remove a framework's default stderr handler from logger ``name`` while ours is on the root.

    For loggers that propagate (Django's ``django`` logger): their records reach the root,
    where our handler writes them, so the framework's own console handler wrote each line a
    second time.
    """
    stream = _state.get("stream")
    lg = logging.getLogger(name)
    if stream is None or stream not in logging.getLogger().handlers or not lg.propagate:
        return
    for handler in list(lg.handlers):
        if is_default(handler):
            lg.removeHandler(handler)


def reinstate() -> None:
    """After an app configured logging itself (``dictConfig``): ours where it belongs again.

    A config that sets the root's handlers removes ours: the OTLP handler goes back (log
    export is ours), the stderr one only if the root was left with none (theirs write the
    lines now).  ``disable_existing_loggers`` (dictConfig's default) switched off our logger
    and the SDK's: enabled again, or findings and export warnings would vanish.
    """
    root = logging.getLogger()
    stream = _state.get("stream")
    if stream is not None and not [h for h in root.handlers if h is not _state.get("otlp")]:
        root.addHandler(stream)
    _export_again()


def _export_again() -> None:
    """The OTLP handler back on the root; our loggers and the SDK's enabled again."""
    root = logging.getLogger()
    otlp = _state.get("otlp")
    if otlp is not None and otlp not in root.handlers:
        root.addHandler(otlp)
    for name, lg in list(logging.root.manager.loggerDict.items()):
        ours = name == "otel_perf" or name.startswith(("otel_perf.", "opentelemetry"))
        if ours and isinstance(lg, logging.Logger):
            lg.disabled = False


def _logger_states() -> dict[str, tuple[bool, tuple[logging.Handler, ...]]]:
    """Each logger's propagation and handlers (to see what a config call changed)."""
    return {
        name: (lg.propagate, tuple(lg.handlers))
        for name, lg in list(logging.root.manager.loggerDict.items())
        if isinstance(lg, logging.Logger)
    }


def _after_app_config(before: dict[str, tuple[bool, tuple[logging.Handler, ...]]]) -> None:
    """After the app's ``dictConfig``/``fileConfig``: the OTLP handler back on the root, ours
    enabled again, and the OTLP handler on each logger the call made stop at itself.

    The app's handlers write the lines now: ours goes back on no logger.  A logger the call
    gave ``propagate: False`` and handlers of its own (to write its lines once) never passes
    a record to the root, so it gets the OTLP handler; each record is exported once, at the
    first such logger.  Not access logs (``*.access``: a line per request, which the SERVER
    span already is; uvicorn configures its own with ``dictConfig`` at every start), not a
    logger silenced with only ``NullHandler``s, not one the call left as it was.
    """
    _export_again()
    otlp = _state.get("otlp")
    if otlp is None:
        return
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or lg.propagate or otlp in lg.handlers:
            continue
        if name == "access" or name.endswith(".access") or lg.disabled:
            continue
        if not any(type(h) is not logging.NullHandler for h in lg.handlers):
            continue
        if before.get(name) != (lg.propagate, tuple(lg.handlers)):
            lg.addHandler(otlp)


def _after_configuring(original: Any) -> Any:
    """``logging.config.dictConfig``/``fileConfig`` as the app calls it, then :func:`_after_app_config`."""

    def configure(*args: Any, **kwargs: Any) -> Any:
        try:
            before = _logger_states()
        except Exception as exc:
            guard.internal_error("logging.config", exc)
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        try:
            _after_app_config(before)
        except Exception as exc:
            guard.internal_error("logging.config", exc)
        return result

    return configure


#: ``basicConfig`` arguments that say where or how records are written (beyond the level)
_SHAPING = (
    "stream", "filename", "filemode", "handlers", "format", "datefmt", "style", "force", "encoding", "errors",
)  # fmt: skip


def _basic_config(original: Any) -> Any:
    """``logging.basicConfig`` as without us, though our handlers are on the root already.

    Without this it would be a no-op (the root has handlers: ours), so a script's
    ``basicConfig(level=logging.DEBUG, stream=sys.stdout, format=...)`` lost its DEBUG records
    and its stdout lines.  Only ``level``: the root gets it and our lines stay (JSON or text, as
    ``OTEL_PERF_LOG_FORMAT`` says).  Any other argument, or no line handler of ours
    (``OTEL_PERF_LOG_FORMAT=off``): ours come off, the app's call runs as it would without us
    (its errors, a bad level or an unknown argument, raised to it, ours put back), and the OTLP
    handler goes back on, as stock ``opentelemetry-instrument`` does for its handler.  A root
    the app gave handlers already is left to the call (a no-op unless ``force``).  Only our own
    steps are guarded: the app's call is never run twice.
    """

    def basicConfig(**kwargs: Any) -> Any:
        try:
            root = logging.getLogger()
            stream, otlp = _state.get("stream"), _state.get("otlp")
            ours = [h for h in root.handlers if h is stream or h is otlp]
            theirs = len(root.handlers) > len(ours)
            force = bool(kwargs.get("force"))
            level_only = not force and set(kwargs) <= {"level", "force"}
        except Exception as exc:
            guard.internal_error("logging.basicConfig", exc)
            return original(**kwargs)
        if (theirs and not force) or not ours:
            return original(**kwargs)  # as without us: a no-op on a configured root
        if level_only and stream in ours:
            if kwargs.get("level") is not None:
                root.setLevel(kwargs["level"])  # a bad level raises, as it would without us
            return None
        for handler in ours:
            root.removeHandler(handler)
        try:
            result = original(**kwargs)
        except BaseException:
            # The app's call failed (stdlib may have added a handler before raising): the
            # root as it was, with our handlers, so its lines are not written twice.
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in ours:
                root.addHandler(handler)
            raise
        try:
            _export_again()
        except Exception as exc:
            guard.internal_error("logging.basicConfig", exc)
        return result

    return basicConfig


def _hook_logging_config(module: Any) -> None:
    for name in ("dictConfig", "fileConfig"):
        if callable(getattr(module, name, None)):
            _patches.wrap(module, name, _after_configuring)


#: the official logging instrumentation's line format under OTEL_PYTHON_LOG_CORRELATION=true
CORRELATION_FORMAT = (
    "%(asctime)s %(levelname)s [%(name)s] [%(filename)s:%(lineno)d] [trace_id=%(otelTraceID)s "
    "span_id=%(otelSpanID)s resource.service.name=%(otelServiceName)s trace_sampled=%(otelTraceSampled)s] "
    "- %(message)s"
)


def install(runtime: Any, _module: Any = None) -> None:
    """The logging row: ids on every record, our stream handler, the OTLP handler.

    The official logging instrumentation's variables apply as there: under
    ``OTEL_PYTHON_LOG_CORRELATION=true`` (and no ``OTEL_PERF_LOG_FORMAT`` of the user's) lines
    are written in ``OTEL_PYTHON_LOG_FORMAT`` with the root at ``OTEL_PYTHON_LOG_LEVEL``, and
    ``OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION=false`` exports no record over OTLP.
    """
    config = runtime.config
    service_name = str(runtime.resource.attributes.get("service.name", ""))
    correlation = config.flag("OTEL_PYTHON_LOG_CORRELATION")
    install_record_factory(service_name, correlation)
    pipeline = runtime.pipeline
    fmt = config.text("OTEL_PERF_LOG_FORMAT")
    line_format = ""
    if correlation and config.sources.get("OTEL_PERF_LOG_FORMAT", "default") == "default":
        fmt, line_format = "text", config.text("OTEL_PYTHON_LOG_FORMAT") or CORRELATION_FORMAT
    export = pipeline is not None and config.flag("OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION")
    install_handlers(fmt, service_name, pipeline.log_handler if export else None, line_format)
    if line_format:
        logging.getLogger().setLevel(config.text("OTEL_PYTHON_LOG_LEVEL").upper())
    when_imported("logging.config", _hook_logging_config)
    _patches.wrap(logging, "basicConfig", _basic_config)


def uninstall() -> None:
    _patches.restore()
    root = logging.getLogger()
    for key in ("stream", "otlp"):
        handler = _state.pop(key, None)
        if handler is not None:
            root.removeHandler(handler)
    previous = _state.pop("factory", None)
    if previous is not None:
        logging.setLogRecordFactory(previous)
