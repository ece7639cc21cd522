"""The old HTTP and database conventions beside the stable ones, for users mid-migration.

``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup`` and ``database/dup`` are the migration modes of the
official instrumentations: each span carries the old attribute names (``http.method``,
``http.status_code``, ``db.statement``...) beside the stable ones, and the old metrics
(``http.server.duration`` and ``http.client.duration`` in milliseconds, ``http.server.response.size``,
``http.server.request.size``) are recorded beside the stable ones, so dashboards and alerts on the
old names keep working while they are moved.  The cores (server, outgoing call, statement,
command) ask :func:`modes` once when they are built and, only in a dup mode, take the versions of
their methods that add these; the default pays nothing.

The old attributes and their values follow the official ASGI, WSGI, httpx, DB-API and Redis
instrumentations in these modes (read from their source; nothing of theirs is imported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from otel_perf import _names as n
from otel_perf._metrics.instruments import SIZE_BOUNDS

if TYPE_CHECKING:
    from otel_perf._config import Config
    from otel_perf._metrics.instruments import Histogram, Registry

HTTP_DUP = "http/dup"
DATABASE_DUP = "database/dup"

#: the old duration histograms' bounds in milliseconds: the SDK's default bounds, as for sizes
DURATION_BOUNDS_MS = SIZE_BOUNDS

#: the old server metrics' attributes (``_server_duration_attrs_old``, and ``http.target``: the route;
#: ``net.host.name`` only the WSGI instrumentation sets)
SERVER_KEY = (
    "http.method", "http.host", "http.scheme", "http.status_code", "http.flavor", "http.server_name",
    "net.host.port", "http.target", "net.host.name",
)  # fmt: skip
#: the old client metric's attributes (``_client_duration_attrs_old``)
CLIENT_KEY = (
    "http.status_code",
    "http.host",
    "http.method",
    "http.flavor",
    "http.scheme",
    "net.peer.port",
    "net.peer.name",
)

#: stable database attribute -> its old name, on statement and command spans
_DB_OLD = {
    n.A_DB_SYSTEM: "db.system",
    n.A_DB_NAMESPACE: "db.name",
    n.A_DB_QUERY_TEXT: "db.statement",
    n.A_DB_OPERATION: "db.operation",
    n.A_SERVER_ADDRESS: "net.peer.name",
    n.A_SERVER_PORT: "net.peer.port",
}
#: ``network.transport`` -> the old ``net.transport`` (Redis)
_TRANSPORT_OLD = {"tcp": "ip_tcp", "udp": "ip_udp", "unix": "unix", "pipe": "pipe"}


def modes(config: Config) -> tuple[bool, bool]:
    """(http/dup, database/dup) as ``OTEL_SEMCONV_STABILITY_OPT_IN`` sets them."""
    tokens = {token.strip().lower() for token in config.items("OTEL_SEMCONV_STABILITY_OPT_IN")}
    return HTTP_DUP in tokens, DATABASE_DUP in tokens


def with_old_db(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """``attributes`` and, for each stable database attribute among them, its old name too, as the
    official DB-API and Redis instrumentations set them (Redis: the database number as
    ``db.redis.database_index``, not ``db.name``; ``net.transport``)."""
    out = dict(attributes)
    for key, old in _DB_OLD.items():
        if key in attributes:
            out[old] = attributes[key]
    if attributes.get(n.A_DB_SYSTEM) == "redis" and "db.name" in out:
        index = str(out.pop("db.name"))
        if index.isdigit():
            out["db.redis.database_index"] = int(index)
    transport = _TRANSPORT_OLD.get(str(attributes.get("network.transport", "")))
    if transport:
        out["net.transport"] = transport
    return out


class OldHttpMetrics:
    """The old HTTP metrics (made at start-up, in the http/dup mode only)."""

    def __init__(self, registry: Registry) -> None:
        def old(name: str, unit: str, what: str) -> Histogram:
            key = SERVER_KEY if name.startswith("http.server.") else CLIENT_KEY
            bounds = DURATION_BOUNDS_MS if unit == "ms" else SIZE_BOUNDS
            return registry.histogram(name, unit, f"{what} (old conventions).", key, bounds)

        self.server_duration = old("http.server.duration", "ms", "Duration of HTTP server requests")
        self.server_response_size = old("http.server.response.size", "By", "Size of HTTP responses")
        self.server_request_size = old("http.server.request.size", "By", "Size of HTTP requests")
        self.client_duration = old("http.client.duration", "ms", "Duration of outgoing HTTP requests")
        self.client_request_size = old("http.client.request.size", "By", "Size of HTTP requests sent")
        self.client_response_size = old("http.client.response.size", "By", "Size of HTTP responses received")


def server_span_attributes(
    method: str,
    path: str,
    query: str,
    scheme: str,
    version: str,
    host: str,
    server: Any,
    client: Any,
    user_agent: str,
    wsgi: bool,
) -> dict[str, Any]:
    """A SERVER span's old attributes known at start, as the official ASGI instrumentation sets them
    (``http.target`` the path, ``http.url`` with the query, ``http.host`` the listening socket,
    ``http.server_name`` the ``Host`` header), or with ``wsgi`` the official WSGI one under a server
    that passes the raw request line (gunicorn's ``RAW_URI``): ``http.target`` the path and query,
    ``http.host`` and ``net.host.name`` the ``Host`` header, ``http.server_name`` the ``SERVER_NAME``.
    ``query`` is the redacted one (``url.query``'s)."""
    with_query = f"{path}?{query}" if query else path
    attrs: dict[str, Any] = {"http.method": method, "http.scheme": scheme}
    socket_host, port = listening(server)
    if wsgi:
        attrs["http.target"] = with_query
        if server and server[0]:
            attrs["http.server_name"] = str(server[0])
        if host:
            attrs["http.host"] = attrs["net.host.name"] = host
    else:
        attrs["http.target"] = path
        if socket_host:
            attrs["http.host"] = socket_host
        if host:
            attrs["http.server_name"] = host
        authority = host or socket_host
        if authority:
            attrs["http.url"] = f"{scheme}://{authority}{with_query}"
    if port:
        attrs["net.host.port"] = port
    if version:
        attrs["http.flavor"] = version
    if user_agent:
        attrs["http.user_agent"] = user_agent
    if client:
        attrs["net.peer.ip"] = str(client[0])[:256]
        if len(client) > 1 and client[1]:
            attrs["net.peer.port"] = int(client[1])
    return attrs


def listening(server: Any) -> tuple[str, int]:
    """The listening socket as ``http.host`` names it (``addr:port``, no port when 80) and its port."""
    if not server:
        return "", 0
    address = str(server[0])
    port = server[1] if len(server) > 1 and isinstance(server[1], int) else 0
    return (address if port in (0, 80) else f"{address}:{port}"), port


def server_request_parts(request: Any) -> tuple[str, str, int, str]:
    """``http.host``, ``http.server_name``, ``net.host.port`` and ``net.host.name`` of a request for
    the old server metrics, as the span has them: from an ASGI scope (the listening socket, the Host
    header, no ``net.host.name``) or a WSGI environ (``HTTP_HOST``, ``SERVER_NAME``, ``SERVER_PORT``,
    ``HTTP_HOST``)."""
    if isinstance(request, Mapping) and "type" in request:  # ASGI
        from otel_perf._core.server import header_value  # (the server core imports this module)

        socket_host, port = listening(request.get("server"))
        return socket_host, header_value(request.get("headers") or (), b"host").decode("latin-1"), port, ""
    if isinstance(request, Mapping):  # WSGI
        raw_port = str(request.get("SERVER_PORT") or "")
        host = str(request.get("HTTP_HOST") or "")
        return host, str(request.get("SERVER_NAME") or ""), int(raw_port) if raw_port.isdigit() else 0, host
    return "", "", 0, ""
