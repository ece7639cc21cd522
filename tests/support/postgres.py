"""A throwaway PostgreSQL server for end-to-end tests.

:func:`start_postgres` runs ``initdb`` and ``pg_ctl`` from the local PostgreSQL installation (Debian's
``postgresql-15`` here) into a temp dir, listening on 127.0.0.1 only, on a free port, with trust auth.
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` OS user. Stop it with
:meth:`PostgresServer.stop` (``pg_ctl stop -m immediate``; the data is thrown away anyway).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .procs import free_port, tail
from .throwaway import ThrowawayServer

_START_TIMEOUT_S = 60


def find_pg_bindir() -> Path | None:
    """Folder holding ``initdb``/``pg_ctl``: ``pg_config --bindir`` first, else the newest
    ``/usr/lib/postgresql/*/bin``; None when PostgreSQL server binaries are not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    ]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


class PostgresError(RuntimeError):
    """The server could not be initialised or started; the message carries the tool output."""


class PostgresServer(ThrowawayServer):
    """A running throwaway PostgreSQL cluster. Use :func:`start_postgres` to create one."""

    def __init__(self, bindir: Path, base_dir: Path, port: int, user: str | None) -> None:
        super().__init__(base_dir, base_dir / "postgres.log")
        self.bindir = bindir
        self.data_dir = base_dir / "data"
        self.port = port
        self._run_as = user  # OS user that owns the cluster when we are root, else None
        self._running = False

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` maintenance database."""
        return self.url("postgres")

    def url(self, database: str = "testdb", driver: str = "psycopg") -> str:
        """SQLAlchemy URL for ``database``, e.g. ``postgresql+psycopg://postgres@127.0.0.1:PORT/testdb``."""
        return f"postgresql+{driver}://postgres@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "testdb") -> str:
        """libpq connection string (for psycopg or psql) for ``database``."""
        return f"host={self.host} port={self.port} user=postgres dbname={database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (for tests that need isolation) and return its SQLAlchemy URL."""
        self._tool("createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", name, as_owner=False)
        return self.url(name)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """initdb + pg_ctl start (waits until the server accepts connections)."""
        self._tool(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base_dir}",
                # A throwaway server: durability off makes it start and run faster.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._tool(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "start",
        )
        self._running = True
        self._started()

    def _terminate(self) -> None:
        """Stop the server immediately (pg_ctl's immediate mode)."""
        # postmaster.pid also covers a server that came up after pg_ctl gave up waiting.
        if self._running or (self.data_dir / "postmaster.pid").exists():
            self._running = False
            with contextlib.suppress(PostgresError):
                self._tool("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def _tool(self, name: str, *args: str, as_owner: bool = True) -> str:
        cmd = [str(self.bindir / name), *args]
        if as_owner and self._run_as:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.base_dir,  # a folder the postgres user can enter
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_START_TIMEOUT_S + 30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresError(
                f"{' '.join(cmd)} failed: {exc!r}\n--- server log:\n{tail(self.log())}"
            ) from exc
        if proc.returncode != 0:
            raise PostgresError(
                f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout:\n{tail(proc.stdout)}\n"
                f"--- stderr:\n{tail(proc.stderr)}\n--- server log:\n{tail(self.log())}"
            )
        return proc.stdout



def start_postgres(database: str = "testdb") -> PostgresServer:
    """Start a throwaway server with ``database`` created; the caller must call ``stop()`` (or use ``with``).

    Raises FileNotFoundError if PostgreSQL is not installed and :class:`PostgresError` if it does not
    start (the message includes initdb/pg_ctl output and the server log).
    """
    bindir = find_pg_bindir()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package postgresql-15"
        )
    run_as: str | None = None
    base_dir = Path(tempfile.mkdtemp(prefix="otel-perf-pg-"))
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            shutil.rmtree(base_dir, ignore_errors=True)
            raise PostgresError(
                "running as root but there is no 'postgres' OS user to run initdb as"
            ) from None
        os.chown(base_dir, owner.pw_uid, owner.pw_gid)
    os.chmod(base_dir, 0o700)
    server = PostgresServer(bindir, base_dir, free_port(), run_as)
    try:
        server.start()
        server.create_database(database)
    except BaseException:
        server.stop()
        raise
    return server
