"""The OTLP exporters' transport for plain-http endpoints: the standard library's ``http.client``.

The SDK exporters (1.45+) take a pluggable transport; theirs are a ``requests`` session (the
default) and a urllib3 pool.  For an ``http://`` endpoint without proxies, netrc or a credential
provider (:func:`~otel_perf._export.otlp_http.lean_http_transport` decides), neither does
anything ``http.client`` does not: one POST at a time per exporter, to one host, on a kept-alive
connection.  Importing urllib3 costs 1.9 MB of every process's memory and requests 4.5 MB
(bench/README.md, "Run 11"); ``http.client`` is in memory already in any web app.

What it keeps from the urllib3 transport: one connection per exporter, reused while the server
keeps it open and opened again after any error; ``timeout`` bounds the whole request (connect,
send, response), as ``urllib3.Timeout(total=...)`` does; what the SDK's client retries is the
same: failing to connect (refused, unresolvable, timed out) and a connection that breaks (reset,
closed before answering) are connection errors, a request sent and not answered in time is not;
an answer the server sent before it had the whole body (413, then closed) is read and returned.
``close()`` drops the idle connection at once and a busy one when its request ends (an
exporter's shutdown does not wait for a slow collector).  Response headers are looked up
case-insensitively (``http.client``'s message).  A test compares its answers with the urllib3
transport's, case by case.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import select
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

_poll = getattr(select, "poll", None)
#: what a send fails with when the server closed after answering early (urllib3's list)
_ANSWERED_EARLY = (errno.EPIPE, errno.ECONNRESET, errno.EPROTOTYPE)
#: every transport made, so a forked child can renew them all
_ALL: weakref.WeakSet[StdlibHTTPTransport] = weakref.WeakSet()


def _renew_after_fork() -> None:
    for transport in list(_ALL):
        transport._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)


class ReadTimeout(TimeoutError):
    """Connected and sent, but the response did not come in time (urllib3's ``ReadTimeoutError``)."""


@dataclass(frozen=True, slots=True)
class StdlibHTTPResult(BaseHTTPResult):
    """A response's status, reason, body and headers (or the error that came instead)."""

    body: bytes = b""
    response_headers: Any = field(default=None, hash=False, compare=False)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.response_headers if self.response_headers is not None else {}


class StdlibHTTPTransport(BaseHTTPTransport):
    """POSTs to one plain-http endpoint over a kept-alive ``http.client`` connection.

    After a fork the child gets a new lock (an export thread of the parent may have held the
    old one, mid-request, for good) and no connection (the socket is the parent's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        #: the connection's socket, also while a ``Connection: close`` response holds it alone
        self._sock: Any = None
        self._address: tuple[str, int] | None = None
        #: close() was called: the request in flight drops its connection when it ends
        self._closing = False
        _ALL.add(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        sock, self._connection, self._sock, self._address = self._sock, None, None, None
        if sock is not None:  # this process's copy of the parent's socket (the connection stays
            # open in the parent).  Closed by its descriptor: a response the parent was reading
            # holds the socket object too (alone, for a ``Connection: close`` answer), and
            # closing the connection would leave the descriptor open.
            with contextlib.suppress(OSError):
                os.close(sock.detach())

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            with self._lock:
                try:
                    connection = self._connect(parts.hostname or "localhost", parts.port or 80, deadline)
                    try:
                        connection.request(method, target, body=data, headers=headers or {})
                    except OSError as error:  # a server may answer before the body is in and close
                        if error.errno not in _ANSWERED_EARLY:  # (413: too large): the send fails,
                            raise  # and the answer is read all the same, as urllib3 does
                    try:
                        self._bound(connection, deadline)
                        response = connection.getresponse()
                        body = response.read()
                    except TimeoutError as error:  # sent, then no answer in time
                        raise ReadTimeout(str(error) or "no response in time") from error
                except Exception as error:  # no response: the connection is not reused
                    self._drop()
                    return StdlibHTTPResult(error=error)
                if response.will_close:
                    self._drop()
                return StdlibHTTPResult(response.status, response.reason, None, body, response.headers)
        finally:
            if self._closing:  # close() came while this request held the connection: after the
                self._drop_idle()  # lock is released, so one of the two drops it

    def _connect(self, host: str, port: int, deadline: float | None) -> http.client.HTTPConnection:
        if self._connection is not None and self._address == (host, port) and not self._dropped():
            self._bound(self._connection, deadline)
            return self._connection
        self._drop()
        remaining = None if deadline is None else self._remaining(deadline)
        connection = http.client.HTTPConnection(host, port, timeout=remaining)
        connection.connect()
        self._connection, self._sock, self._address = connection, connection.sock, (host, port)
        return connection

    def _dropped(self) -> bool:
        """Whether the server closed the idle connection (readable before a request: its EOF),
        as urllib3's pool checks before reusing one."""
        sock = self._connection.sock if self._connection is not None else None
        if sock is None:
            return True
        try:
            if _poll is None:  # no poll() (Windows): select, limited to descriptors below 1024
                return bool(select.select([sock], [], [], 0)[0])
            poller = _poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    @staticmethod
    def _remaining(deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("OTLP export timed out")
        return remaining

    def _bound(self, connection: http.client.HTTPConnection, deadline: float | None) -> None:
        """What is left of the request's time, for the socket's next operations."""
        if deadline is not None and connection.sock is not None:
            connection.sock.settimeout(self._remaining(deadline))

    def _drop(self) -> None:
        connection, self._connection, self._sock, self._address = self._connection, None, None, None
        if connection is not None:
            connection.close()

    def is_connection_error(self, exception: Exception | None) -> bool:
        """Failing to connect, or the connection failing (retried); not a request that timed out."""
        return isinstance(exception, (OSError, http.client.HTTPException)) and not isinstance(
            exception, ReadTimeout
        )

    def close(self) -> None:
        """Close the idle connection; one in use is closed when its request ends (as urllib3's
        ``PoolManager.clear()``: shutting an exporter down does not wait for a slow collector)."""
        self._closing = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        if self._lock.acquire(blocking=False):  # else a request holds it, and drops it after
            try:
                self._drop()
            finally:
                self._lock.release()
