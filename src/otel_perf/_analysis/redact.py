"""Redacting sensitive URL query parameters before a URL leaves the process."""

from __future__ import annotations

import re
from urllib.parse import unquote

_SEPARATORS = re.compile(r"([&;])")


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
