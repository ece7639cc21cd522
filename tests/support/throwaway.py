"""What every throwaway server of the tests shares: its files, stopping it, and a safety net.

A server (Redis, MariaDB, PostgreSQL) lives in ``base_dir``; :meth:`ThrowawayServer.stop` ends it
and deletes the directory, idempotently; one a test forgot is stopped at interpreter exit. A
subclass says how its process ends (:meth:`_terminate`) and registers itself with
:meth:`_started` once it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="ThrowawayServer")


class ThrowawayServer:
    base_dir: Path
    log_file: Path
    #: seconds a SIGTERM may take before SIGKILL (subclasses with a process of their own)
    stop_timeout = 5.0

    def __init__(self, base_dir: Path, log_file: Path) -> None:
        self.base_dir = base_dir
        self.log_file = log_file
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _started(self) -> None:
        _live.add(self)

    def _terminate(self) -> None:
        """End the server's process: SIGTERM, then SIGKILL after :attr:`stop_timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server and delete its files. Idempotent."""
        self._terminate()
        _live.discard(self)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_live: set[ThrowawayServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()
