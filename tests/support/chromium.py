"""Headless Chromium driven over the Chrome DevTools Protocol, for browser end-to-end tests.

:func:`start_chromium` runs Debian's ``/usr/bin/chromium`` headless on a loopback debugging port
(with the flags this machine needs: no sandbox as root, no background networking) in a fresh
profile, and :meth:`Chromium.new_page` opens a tab as a :class:`Page`: ``navigate``, ``evaluate``,
``click``, ``screenshot``, and every console message and uncaught exception the page produced
(:attr:`Page.console`, :attr:`Page.exceptions`). Everything is bounded by timeouts and the
browser is killed at ``stop()`` (or interpreter exit, through :class:`AppProcess`).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

from .procs import AppProcess, free_port, http_get

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--window-size=1024,768",
)


def chromium_path() -> str | None:
    """Path of the Chromium binary, or None when it is not installed."""
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@dataclass(frozen=True)
class ConsoleMessage:
    """One console message: ``type`` is the console API's (``log``, ``warning``, ``error``...) or,
    for messages the browser itself logs (network errors, CSP violations), ``browser:<level>``."""

    type: str
    text: str


class Page:
    """One tab, over its own DevTools websocket."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition(self._lock)
        self.console: list[ConsoleMessage] = []
        self.exceptions: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _read(self) -> None:
        while True:
            try:
                raw = self._ws.recv()
            except Exception:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            if not raw:
                continue
            message = json.loads(raw)
            with self._cond:
                if "id" in message:
                    self._replies[message["id"]] = message
                else:
                    self._on_event(message)
                self._cond.notify_all()

    def _on_event(self, message: dict[str, Any]) -> None:
        method = message.get("method", "")
        params = message.get("params", {})
        self.events.append(message)
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(ConsoleMessage(params.get("type", ""), text))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(ConsoleMessage("browser:" + entry.get("level", ""), entry.get("text", "")))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text", "")
            self.exceptions.append(str(description))

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send a DevTools command and return its result (raises on a protocol error)."""
        ident = next(self._ids)
        payload = json.dumps({"id": ident, "method": method, "params": params or {}})
        with self._lock:
            self._ws.send(payload)
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError(f"no DevTools answer to {method} within {timeout}s")
                self._cond.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its load event."""
        self.send("Page.navigate", {"url": url}, timeout=timeout)
        self.wait_for("document.readyState === 'complete'", timeout=timeout, what=f"load of {url}")

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate a JavaScript expression in the page (awaiting promises); return its value."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 15.0, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.05)

    def wait_for_console(
        self, predicate: Callable[[ConsoleMessage], bool], *, timeout: float = 15.0, what: str = ""
    ) -> list[ConsoleMessage]:
        """Wait until a console message matches ``predicate``; return the matching ones."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.console if predicate(m)]
            if found:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; console: {self.console}"
                )
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real (trusted) mouse click in the middle of the element ``selector``."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path) -> None:
        """Save a PNG of the visible page."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with self._cond:
            self._closed = True
        with contextlib.suppress(Exception):
            self._ws.close()
        self._reader.join(5)


class Chromium:
    """A headless Chromium process; see the module docstring."""

    def __init__(self, binary: str, profile: Path, port: int) -> None:
        self.port = port
        self.profile = profile
        args = [
            binary,
            *FLAGS,
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.proc = AppProcess(args, name="chromium")
        self.pages: list[Page] = []

    def start(self, timeout: float = 30.0) -> Chromium:
        self.proc.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = http_get(f"http://127.0.0.1:{self.port}/json/version", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if not self.proc.is_running or time.monotonic() >= deadline:
                output = self.proc.output()
                self.stop()
                raise RuntimeError(f"chromium did not open its debugging port:\n{output[-3000:]}")
            time.sleep(0.1)

    def new_page(self) -> Page:
        """Open a new blank tab."""
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            target = json.loads(response.read())
        page = Page(target["webSocketDebuggerUrl"])
        self.pages.append(page)
        return page

    def stop(self) -> None:
        for page in self.pages:
            page.close()
        self.proc.stop()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_chromium(binary: str) -> Chromium:
    """Start headless Chromium with a fresh profile on a free loopback debugging port."""
    profile = Path(tempfile.mkdtemp(prefix="otel-perf-chromium-"))
    return Chromium(binary, profile, free_port()).start()
