"""Redacting what a URL must not carry out of the process: credentials and sensitive parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

_SEPARATORS = re.compile(r"([&;])")

#: URL-bearing span attributes an official instrumentation may set, stable and old semantic
#: conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup`` brings the old ones back).
URL_ATTRIBUTES = ("url.full", "http.url")
QUERY_ATTRIBUTES = ("url.query",)
TARGET_ATTRIBUTES = ("http.target",)


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
    ``http.target`` sensitive parameters.
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
    return changed
