"""Header capture on spans, as the official HTTP instrumentations do it.

``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{SERVER,CLIENT}_{REQUEST,RESPONSE}`` list the
headers (regular expressions, case-insensitive) to put on SERVER and CLIENT spans as
``http.request.header.<name>`` / ``http.response.header.<name>`` (a list of values, given
as a tuple of strings: what the SDK's attribute validation would store, so the lean span
path takes them as they are, see ``LeanSpans._trusted``);
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` lists those whose values
export as ``[REDACTED]``.  The launcher and our distro add Authorization, Cookie,
Set-Cookie, Proxy-Authorization, X-Api-Key and ``OTEL_PERF_SENSITIVE_HEADERS`` to that list,
so they never leave the process.  Nothing is read or built unless capture is configured and
the span records.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    SanitizeValue,
    get_custom_headers,
    normalise_request_header_name,
    normalise_response_header_name,
)

Pairs = Iterable[tuple[str, str]]


class HeaderCapture:
    """The capture settings of one side (``SERVER`` or ``CLIENT``), read once."""

    def __init__(self, side: str) -> None:
        prefix = f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{side}_"
        self.request_names = get_custom_headers(prefix + "REQUEST")
        self.response_names = get_custom_headers(prefix + "RESPONSE")
        self._sanitize = SanitizeValue(
            get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
        )

    @property
    def active(self) -> bool:
        return bool(self.request_names or self.response_names)

    def request(self, pairs: Pairs) -> dict[str, tuple[str, ...]]:
        """``http.request.header.*`` attributes for the request's headers."""
        if not self.request_names:
            return {}
        return _tuples(
            self._sanitize.sanitize_header_values(
                _grouped(pairs), self.request_names, normalise_request_header_name
            )
        )

    def response(self, pairs: Pairs) -> dict[str, tuple[str, ...]]:
        """``http.response.header.*`` attributes for the response's headers."""
        if not self.response_names:
            return {}
        return _tuples(
            self._sanitize.sanitize_header_values(
                _grouped(pairs), self.response_names, normalise_response_header_name
            )
        )


def _tuples(attributes: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {key: tuple(values) for key, values in attributes.items()}


def _grouped(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out
