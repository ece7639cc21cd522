"""Child processes for end-to-end tests: free ports, a clean environment and :class:`AppProcess`.

Every process a test starts runs in its own session (process group) with an environment from which all
``OTEL_*`` variables were removed, so the developer's shell can never leak exporter settings into a
test. Processes are stopped with SIGTERM, then SIGKILL, for the whole group; a process that a test
forgot to stop is killed when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import pytest

#: Environment prefixes removed from every child environment (``OTEL_PERF_*`` is covered by ``OTEL_``).
SCRUBBED_ENV_PREFIXES: tuple[str, ...] = ("OTEL_", "OTEL_PERF_")

_OUTPUT_TAIL_CHARS = 4000


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (racy by nature; use it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``os.environ`` without ``OTEL_*``/``OTEL_PERF_*`` variables, then apply ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
    if extra:
        env.update(extra)
    return env


def in_ci() -> bool:
    """True when the run is in CI (``CI=true``), where a missing backend is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test because a backend is unavailable; under ``CI=true`` fail loudly instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing backend is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def tail(text: str, limit: int = _OUTPUT_TAIL_CHARS) -> str:
    """Return the last ``limit`` characters of ``text``, marked when truncated."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} chars cut ...]\n{text[-limit:]}"


# Local servers only: never route 127.0.0.1 through a proxy configured in the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` without proxies; return ``(status, body)`` for any HTTP status (4xx/5xx included)."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:  # HTTPError holds the response open; leaking it is a ResourceWarning.
            return err.code, err.read()


# Strong references on purpose: a started process must be stopped even if the test dropped it.
_live: set[AppProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Safety net for interrupted runs (Ctrl-C, a crashing fixture): never leave servers behind.
    for proc in list(_live):
        with contextlib.suppress(Exception):
            proc.stop(timeout=2.0)


class AppProcess:
    """A subprocess under test, with captured output and guaranteed cleanup.

    ``env`` is merged onto :func:`clean_environ` (``PYTHONUNBUFFERED=1`` is set unless ``env``
    overrides it, so output is not lost when the process is killed). Use as a context manager::

        with AppProcess([sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
                        env=receiver.exporter_env()) as app:
            app.wait_http(f"http://127.0.0.1:{port}/health")
            ...
        print(app.output())          # still available after stop
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.args: list[str] = [str(a) for a in args]
        self.env: dict[str, str] = clean_environ({"PYTHONUNBUFFERED": "1", **(env or {})})
        self.cwd = cwd
        self.name: str = name or Path(self.args[0]).name
        self._popen: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._captured: tuple[str, str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> AppProcess:
        """Start the process (own session, stdout/stderr to temp files). Returns ``self``."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} already started")
        self._dir = Path(tempfile.mkdtemp(prefix=f"otel-perf-{self.name}-"))
        with open(self._dir / "stdout", "wb") as out, open(self._dir / "stderr", "wb") as err:
            self._popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        _live.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; return the exit code.

        Idempotent. Captured output stays readable through :meth:`output` afterwards.
        """
        popen = self._popen
        if popen is None:
            return None
        if popen.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                popen.wait(10)
        # The leader may be gone while children it spawned (workers) still run: kill what is left.
        self._signal_group(signal.SIGKILL)
        _live.discard(self)
        if self._captured is None:
            self._captured = (self._read("stdout"), self._read("stderr"))
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        return popen.returncode

    def __enter__(self) -> AppProcess:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """Process id (also the process-group id)."""
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while running."""
        return self._require().poll()

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit by itself; AssertionError with its output on timeout."""
        try:
            return self._require().wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s\n{self.describe()}") from None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process group (e.g. SIGINT to test graceful shutdown)."""
        self._require()
        self._signal_group(sig)

    # -- output ----------------------------------------------------------------------------------

    def stdout(self) -> str:
        """Captured stdout so far (or in full after stop)."""
        return self._captured[0] if self._captured else self._read("stdout")

    def stderr(self) -> str:
        """Captured stderr so far (or in full after stop)."""
        return self._captured[1] if self._captured else self._read("stderr")

    def output(self) -> str:
        """Captured stdout followed by stderr."""
        return self.stdout() + self.stderr()

    def describe(self) -> str:
        """A readable status block (command, exit code, output tails) for assertion messages."""
        state = "not started"
        if self._popen is not None:
            code = self._popen.poll()
            state = "running" if code is None else f"exited with {code}"
        return (
            f"--- {self.name}: {state}; cmd: {' '.join(self.args)}\n"
            f"--- stdout:\n{tail(self.stdout())}\n--- stderr:\n{tail(self.stderr())}"
        )

    # -- readiness -------------------------------------------------------------------------------

    def wait_http(self, url: str, timeout: float = 30.0, *, interval: float = 0.1) -> int:
        """Poll ``url`` with GET until it answers with any HTTP status; return that status.

        Raises AssertionError (with the process output) if the process exits first or on timeout.
        """
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while True:
            if not self.is_running():
                raise AssertionError(f"{self.name} exited before {url} answered\n{self.describe()}")
            status = _http_status(url, timeout=min(2.0, timeout))
            if isinstance(status, int):
                return status
            last_error = status
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{url} did not answer within {timeout}s (last error: {last_error})\n{self.describe()}"
                )
            time.sleep(interval)

    # -- internals -------------------------------------------------------------------------------

    def _require(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} not started")
        return self._popen

    def _signal_group(self, sig: int) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def _read(self, stream: str) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / stream).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _http_status(url: str, timeout: float) -> int | str:
    """GET ``url``: the HTTP status (errors included), or a string describing a connection failure."""
    try:
        return http_get(url, timeout=timeout)[0]
    except (urllib.error.URLError, OSError) as err:
        return repr(err)


def until_serving(url: str, workers: int, timeout: float = 60.0) -> None:
    """GET ``url`` (a route answering ``{"pid": ...}``), each time on a new connection, until
    ``workers`` distinct processes have answered.

    A server answers as soon as its first worker is up while the others may still be importing
    (slowest on the newest Python); requests sent before then all land on that one worker. Use a
    route other than the one a test counts.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() >= deadline:
            raise AssertionError(f"only workers {sorted(seen)} answered {url} within {timeout}s")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                seen.add(int(json.loads(response.read())["pid"]))
        except OSError:  # a worker still starting (URLError and HTTPError are OSErrors): ask again
            pass
        time.sleep(0.02)
