"""A throwaway MariaDB server for end-to-end tests (Debian's ``mariadb-server``).

:func:`start_mysql` runs ``mariadb-install-db`` into a temp dir and ``mariadbd`` on 127.0.0.1 and
a free port (no other defaults file read), with a ``root`` user without password reachable over
TCP, and creates ``testdb``.  As root the server runs as the ``mysql`` OS user the package creates.
:meth:`MySQLServer.stop` ends it and deletes its files; a server a test forgot is stopped at exit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import free_port, tail
from .throwaway import ThrowawayServer

_START_TIMEOUT_S = 60.0


def mariadb_paths() -> tuple[str, str] | None:
    """(``mariadb-install-db``, ``mariadbd``), or None when the Debian package is not installed."""
    install = shutil.which("mariadb-install-db")
    server = shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None
    )
    return (install, server) if install and server else None


class MySQLError(RuntimeError):
    """The server did not start; the message carries its log."""


class MySQLServer(ThrowawayServer):
    """A running throwaway MariaDB. Use :func:`start_mysql` to create one."""

    stop_timeout = 20.0

    def __init__(self, base_dir: Path, port: int) -> None:
        super().__init__(base_dir, base_dir / "error.log")
        self.port = port

    def start(self, install_db: str, mariadbd: str, user: str | None) -> None:
        data = self.base_dir / "data"
        data.mkdir()
        as_user = [f"--user={user}"] if user else []
        if user:
            owner = pwd.getpwnam(user)
            for path in (self.base_dir, data):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        result = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={data}", *as_user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise MySQLError(f"mariadb-install-db failed:\n{tail(result.stdout + result.stderr)}")
        self._proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={data}", *as_user, f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.base_dir / 'mysqld.sock'}",
             f"--pid-file={self.base_dir / 'mysqld.pid'}", f"--log-error={self.log_file}",
             "--skip-name-resolve", "--innodb-buffer-pool-size=16M"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._started()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MySQLError(f"mariadbd exited with {self._proc.returncode}\n{tail(self.log())}")
            if "ready for connections" in self.log():
                with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                    return
            time.sleep(0.1)
        raise MySQLError(f"mariadbd did not get ready within {_START_TIMEOUT_S}s\n{tail(self.log())}")




def start_mysql(database: str = "testdb") -> MySQLServer:
    """Start a throwaway server with ``database`` created; the caller must ``stop()`` it.

    Raises FileNotFoundError when MariaDB is not installed, :class:`MySQLError` when it does not start.
    """
    paths = mariadb_paths()
    if paths is None:
        raise FileNotFoundError(
            "mariadbd / mariadb-install-db not found: install the Debian package mariadb-server"
        )
    user = "mysql" if os.geteuid() == 0 else None
    server = MySQLServer(Path(tempfile.mkdtemp(prefix="otel-perf-mysql-")), free_port())
    try:
        server.start(*paths, user)
        import pymysql

        connection = pymysql.connect(host=server.host, port=server.port, user="root", password="")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        finally:
            connection.close()
    except BaseException:
        server.stop()
        raise
    return server
