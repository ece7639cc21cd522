"""Redacting what a URL must not carry out of the process: credentials and sensitive parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from otel_perf._analysis.sql import normalize

_SEPARATORS = re.compile(r"([&;])")

#: URL-bearing span attributes an official instrumentation may set, stable and old semantic
#: conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup`` brings the old ones back).
URL_ATTRIBUTES = ("url.full", "http.url")
QUERY_ATTRIBUTES = ("url.query",)
TARGET_ATTRIBUTES = ("http.target",)
#: statement text an instrumentation not ours may export with its literals (the official
#: psycopg2, mysqlclient, DB-API instrumentations: ``WHERE email = 'a@b.c'``)
STATEMENT_ATTRIBUTES = ("db.query.text", "db.statement")
#: where the system a statement ran on is (decides whether double quotes are identifiers)
SYSTEM_ATTRIBUTES = ("db.system.name", "db.system")


def redact_query(query: str, names: frozenset[str]) -> str:
    """``query`` with the value of every parameter named in ``names`` (lower case) replaced by ``REDACTED``.

    Names are compared percent-decoded and case-insensitively (``api%5Fkey`` is ``api_key``), and both
    ``&`` and ``;`` separate parameters.
    """
    if not names or not query:
        return query
    out = []
    for part in _SEPARATORS.split(query):
        name, sep, _ = part.partition("=")
        redacted = sep and unquote(name.replace("+", " ")).strip().lower() in names
        out.append(f"{name}=REDACTED" if redacted else part)
    return "".join(out)


class LogScrubber:
    """Takes values out of the text of exported log records (the local log output is untouched).

    Application logs carry what we never export elsewhere: SQLAlchemy errors quote the
    statement and its parameters (``[SQL: ...]``, ``[parameters: ...]``), PostgreSQL errors
    echo the statement line and the conflicting key (``LINE 1:``, ``Key (email)=(...)``),
    and httpx logs every request URL with its query string.  Statements are normalized,
    parameters and key values replaced, sensitive query parameters redacted.
    """

    _SQL = re.compile(r"\[SQL: (?P<sql>.*?)\](?=\n\[parameters: |\n\(Background on this error|\s*\Z)", re.S)
    _PARAMS = re.compile(r"\[parameters: [^\n]*")
    _PG_LINE = re.compile(r"^(LINE \d+: ).*$", re.M)
    _PG_KEY = re.compile(r"((?:Key \([^\n]*?\)=|Failing row contains ))\([^\n]*")
    _FIELDS = ("exception.message", "exception.stacktrace")

    def __init__(self, redact_params: tuple[str, ...]) -> None:
        names = "|".join(re.escape(p) for p in redact_params if p)
        self._query = re.compile(rf"(?<=[?&;])({names})=[^&\s\"'#;]*", re.I) if names else None

    def text(self, value: str) -> str:
        if "[SQL: " in value:
            value = self._SQL.sub(lambda m: f"[SQL: {normalize(m.group('sql'))}]", value)
        if "[parameters: " in value:
            value = self._PARAMS.sub("[parameters: REDACTED]", value)
        if "LINE " in value:
            value = self._PG_LINE.sub(lambda m: m.group(1) + normalize(m.group()[len(m.group(1)) :]), value)
        if "Key (" in value or "Failing row contains" in value:
            value = self._PG_KEY.sub(r"\1(?)", value)
        if self._query is not None and "=" in value and ("?" in value or "&" in value):
            value = self._query.sub(r"\1=REDACTED", value)
        return value

    #: what our record factory puts on every record for formatters (``%(trace_id)s``): the
    #: exported record has its trace context and resource already
    _FORMATTER_FIELDS = ("trace_id", "span_id", "service_name")

    def record(self, log_record: Any) -> None:
        record = getattr(log_record, "log_record", log_record)
        body = getattr(record, "body", None)
        if isinstance(body, str):
            record.body = self.text(body)
        attributes = getattr(record, "attributes", None)
        if attributes:
            for key in self._FIELDS:
                value = attributes.get(key)
                if isinstance(value, str):
                    attributes[key] = self.text(value)
            for key in self._FORMATTER_FIELDS:
                if key in attributes:
                    del attributes[key]
            if "data" in attributes and _scope_name(log_record).startswith("celery"):
                # Celery's "received"/"succeeded" records carry the task's args, kwargs and
                # return value in ``extra={"data": ...}``: payloads, never exported
                del attributes["data"]

    def exception(self, exc: BaseException) -> dict[str, str]:
        """The ``exception`` event attributes of ``exc`` (semconv), its text scrubbed as above."""
        import traceback

        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return {  # the keys and values Span.record_exception gives, text scrubbed
            "exception.type": type(exc).__name__,
            "exception.message": self.text(str(exc)),
            "exception.stacktrace": self.text(stack),
            "exception.escaped": "False",
        }


#: quoted strings in a database's error message: where drivers put the offending value
#: (MySQL ``Duplicate entry 'a@b.c' for key ...``, PostgreSQL ``... for type uuid: "..."``)
_SINGLE_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _quoted_values(text: str) -> str:
    """``text`` with its quoted strings as ``?``: single-quoted ones first, then double-quoted
    ones, except a double-quoted wrapper of values already taken out (PyMySQL's
    ``(1062, "Duplicate entry ? for key ?")`` keeps its words)."""
    text = _SINGLE_QUOTED.sub("?", text)
    return _DOUBLE_QUOTED.sub(lambda m: m.group() if "?" in m.group() else "?", text)


def database_error(scrubber: LogScrubber, exc: BaseException) -> dict[str, str]:
    """The ``exception`` event of a statement the database refused: as :meth:`LogScrubber.exception`,
    and every quoted string of the error messages (the exception's and those it was raised from)
    a ``?``, in the message and where the stack trace repeats them; the trace's own lines (file
    names, code) are kept."""
    event = scrubber.exception(exc)
    stack = event["exception.stacktrace"]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        raw = scrubber.text(str(current))
        if raw:
            stack = stack.replace(raw, _quoted_values(raw))
        current = current.__cause__ or current.__context__
    event["exception.message"] = _quoted_values(event["exception.message"])
    event["exception.stacktrace"] = stack
    return event


def _scope_name(log_record: Any) -> str:
    """The logger's name: the instrumentation scope the log handler emitted the record under."""
    scope = getattr(log_record, "instrumentation_scope", None)
    name = getattr(scope, "name", "")
    return name if isinstance(name, str) else ""


def safe_url(url: str, names: frozenset[str], limit: int) -> str:
    """``url`` as it may be exported: no user or password, parameters in ``names`` redacted,
    at most ``limit`` characters ("" when it does not parse)."""
    try:
        parts = urlsplit(url[: limit * 2])
    except ValueError:
        return ""
    netloc = parts.netloc.rpartition("@")[2]
    query = redact_query(parts.query, names)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))[:limit]


def redact_target(target: str, names: frozenset[str]) -> str:
    """``http.target`` (path and query) with the query's sensitive parameters redacted."""
    path, sep, query = target.partition("?")
    return f"{path}{sep}{redact_query(query, names)}" if sep else target


def redacted_url_attributes(
    attributes: Mapping[str, Any], names: frozenset[str], limit: int
) -> dict[str, Any] | None:
    """The URL attributes of a span not made by us, redacted: only those that change (None: none).

    For spans of other instrumentations (official ones loaded beside ours, the app's own):
    ``url.full``/``http.url`` lose credentials and sensitive parameters, ``url.query`` and
    ``http.target`` sensitive parameters, and a statement (``db.query.text``,
    ``db.statement``) its literals, as ours are normalized.
    """
    changed: dict[str, Any] | None = None
    for key in URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            new = safe_url(value, names, limit)
            if new != value:
                changed = changed or {}
                changed[key] = new
    for key in QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            new = redact_query(value, names)
            if new != value:
                changed = changed or {}
                changed[key] = new
    for key in TARGET_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            new = redact_target(value, names)
            if new != value:
                changed = changed or {}
                changed[key] = new
    for key in STATEMENT_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            system = next((s for s in map(attributes.get, SYSTEM_ATTRIBUTES) if isinstance(s, str)), "")
            if system in NOT_SQL:
                continue
            new = _normalized(value, system)
            if new != value:
                changed = changed or {}
                changed[key] = new
    return changed


#: systems whose statements are no SQL (JSON queries, commands): our normalizer would mangle
#: them; their instrumentations sanitize their own (Redis, Elasticsearch) or send none by default
NOT_SQL = frozenset({
    "mongodb", "elasticsearch", "opensearch", "redis", "memcached", "couchbase", "couchdb",
    "dynamodb", "aws.dynamodb", "cosmosdb", "azure.cosmosdb", "neo4j",
})  # fmt: skip
#: (statement, system) -> normalized, for other instrumentations' spans (bounded: cleared when full)
_NORMALIZED: dict[tuple[str, str], str] = {}
MAX_NORMALIZED = 1024


def _normalized(statement: str, system: str) -> str:
    key = (statement, system)
    found = _NORMALIZED.get(key)
    if found is None:
        found = normalize(statement, system)
        if len(_NORMALIZED) >= MAX_NORMALIZED:
            _NORMALIZED.clear()
        _NORMALIZED[key] = found
    return found
