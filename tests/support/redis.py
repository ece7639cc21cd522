"""A throwaway Redis server for end-to-end tests (Debian's ``redis-server``).

:func:`start_redis` runs ``redis-server`` on 127.0.0.1 and a free port, with no persistence (no
RDB snapshots, no AOF) and its working directory in a temp dir; :meth:`RedisServer.stop` ends it
(SIGTERM, then SIGKILL) and deletes the directory.  A server a test forgot is stopped at exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import free_port, tail
from .throwaway import ThrowawayServer

_START_TIMEOUT_S = 20.0


def redis_server_path() -> str | None:
    """The ``redis-server`` binary, or None when the Debian package is not installed."""
    return shutil.which("redis-server")


class RedisError(RuntimeError):
    """The server did not start; the message carries its output."""


class RedisServer(ThrowawayServer):
    """A running throwaway Redis. Use :func:`start_redis` to create one."""

    def __init__(self, binary: str, base_dir: Path, port: int) -> None:
        super().__init__(base_dir, base_dir / "redis.log")
        self.binary = binary
        self.port = port

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:PORT/db``."""
        return f"redis://{self.host}:{self.port}/{db}"

    def command(self, *args: str) -> bytes:
        """Send one inline command over a raw socket and return the raw reply (for test set-up)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(65536)

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base_dir),
                "--logfile",
                str(self.log_file),
                "--protected-mode",
                "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._started()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisError(f"redis-server exited with {self._proc.returncode}\n{tail(self.log())}")
            with contextlib.suppress(OSError):
                if self.command("PING").startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RedisError(f"redis-server did not answer PING within {_START_TIMEOUT_S}s\n{tail(self.log())}")




def start_redis() -> RedisServer:
    """Start a throwaway server; the caller must ``stop()`` it (or use ``with``).

    Raises FileNotFoundError when ``redis-server`` is not installed, :class:`RedisError` when it
    does not start.
    """
    binary = redis_server_path()
    if binary is None:
        raise FileNotFoundError("redis-server not found: install the Debian package redis-server")
    server = RedisServer(binary, Path(tempfile.mkdtemp(prefix="otel-perf-redis-")), free_port())
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
