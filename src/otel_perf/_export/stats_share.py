"""Whole-service stats: every worker of a server answers for all of them.

Under ``uvicorn --workers N``, gunicorn (with or without ``--preload``) and ``fastapi run
--workers N`` each worker process has its own instruments, and a request to the stats path
reaches one of them.  So that the answer covers the whole service, the workers of one server
share their numbers on demand, through a private folder and nothing else (no extra server):

* **The supervisor** (uvicorn's process manager, gunicorn's arbiter) creates the folder when
  its main loop starts, ``<tmp>/otel-perf-<uid>/<pid>-<random>`` (mode 0700), names it in
  its environment (``OTEL_PERF__STATS_SHARE=<pid>:<folder>``, inherited by the workers it
  forks or spawns) and removes it when it stops.  Folders left by a supervisor that was
  killed are removed by the next one that starts.
* **Each worker** whose parent is that supervisor listens on a Unix socket ``w-<pid>.sock``
  in the folder, in one thread of its own that sleeps in ``accept()``: asked, it answers with
  a :class:`~otel_perf._analysis.snapshot.Snapshot` of its instruments (bucket counts, not
  measurements).  The same thread keeps the worker's history for ``?minutes=``: a snapshot a
  minute for ten minutes, then one every five minutes up to an hour (at most 20).
* **The worker that answers** a stats request asks every sibling (at most
  ``ASK_TIMEOUT_S`` in all), adds its own snapshot and merges them: bucket counts and sums
  add, percentiles are computed from the merged buckets.  A sibling that does not answer in
  time is named in ``workers.missing``; the socket of one that has exited is removed.
* **Reset** (``POST <stats>/reset``) asks every worker for its snapshot and stores them in
  ``baseline.json`` in the folder; later answers subtract, per worker, what it had then (a
  worker started since has nothing to subtract).  Every worker clears its findings.

Nothing of this runs per request.  A worker that exits takes its numbers with it (the stats
cover the workers alive); its exported metrics keep them.  Without a supervisor (one
process) the same code runs with no folder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_perf._analysis.snapshot import Snapshot
from otel_perf._core import guard
from otel_perf._core.runtime import Runtime

logger = logging.getLogger("otel_perf")

ENV = "OTEL_PERF__STATS_SHARE"
#: The longest one stats answer waits for the other workers, in all.
ASK_TIMEOUT_S = 2.0
#: Largest answer read from a sibling (a snapshot of 1000 routes is a few MB).
MAX_ANSWER = 64 << 20
HISTORY_EVERY_S = 60.0
#: History kept: every minute for RECENT_MINUTES, then every 5 minutes up to MAX_MINUTES.
RECENT_MINUTES = 10
MAX_MINUTES = 60
_SOCKET = "w-{pid}.sock"
_BASELINE = "baseline.json"


def worker_id(rt: Runtime) -> str:
    """This process among the workers, over time (a pid can be reused; pid plus start cannot)."""
    return f"{os.getpid()}-{int(rt.started * 1e6)}"


@dataclass
class Gathered:
    """What :meth:`Share.gather` collected: each worker's current snapshot and the base to subtract."""

    #: (worker id, its snapshot now, what to subtract from it)
    parts: list[tuple[str, Snapshot, Snapshot | None]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    shared: bool = False

    def window(self) -> tuple[Snapshot, float]:
        """The merged window and when it starts (the earliest base, or the earliest start)."""
        merged = Snapshot.merged(current.minus(base) for _, current, base in self.parts)
        starts = [base.at if base is not None else current.started for _, current, base in self.parts]
        return merged, min(starts) if starts else merged.started


class History:
    """This worker's own snapshots for ``?minutes=N`` (bounded, thinned as they age)."""

    def __init__(self) -> None:
        self.entries: list[Snapshot] = []
        self.lock = threading.Lock()

    def add(self, snap: Snapshot) -> None:
        with self.lock:
            kept: list[Snapshot] = []
            slots: set[int] = set()
            for entry in [*self.entries, snap]:
                age_min = (snap.at - entry.at) / 60.0
                if age_min > MAX_MINUTES + 1:
                    continue
                if age_min > RECENT_MINUTES:  # older: one per five minutes
                    slot = int(entry.at // 300)
                    if slot in slots:
                        continue
                    slots.add(slot)
                kept.append(entry)
            self.entries = kept

    def at(self, when: float) -> Snapshot | None:
        """The latest snapshot taken at or before ``when`` (None: the window starts at process start)."""
        with self.lock:
            found = None
            for entry in self.entries:
                if entry.at <= when:
                    found = entry
            return found

    def clear(self) -> None:
        with self.lock:
            self.entries = []


class Share:
    """This process's part: its history, its socket in a server's folder, and asking the others."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.history = History()
        self.folder: str | None = None
        #: in-process baseline of a reset when there is no folder: worker id -> snapshot, and when
        self.baseline: tuple[float, dict[str, Snapshot]] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._supervisor = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Join the server's folder when a supervisor made one for us; keep the history either way."""
        if self._supervisor:
            return
        self._stop = threading.Event()
        self.folder = _inherited_folder()
        self._listener = None
        thread = threading.Thread(target=self._run, name="otel-perf-stats-share", daemon=True)
        self._thread = thread
        thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop listening (the process exits, or turned out to be a supervisor)."""
        self._stop.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                path = listener.getsockname()
                listener.close()
                if isinstance(path, str) and path:
                    os.unlink(path)

    def after_fork(self) -> None:
        """In a forked child: fresh locks, no history of the parent's, a thread of its own."""
        self._lock = threading.Lock()
        self.history = History()
        self.baseline = None
        self._listener = None  # the parent's socket belongs to the parent
        self._supervisor = False
        self.start()

    def supervise(self) -> Callable[[], None]:
        """This process supervises workers: make their folder, stop serving stats here."""
        self._supervisor = True
        self.stop()
        try:
            folder = _make_folder()
        except OSError as exc:
            logger.warning("otel-perf: stats cover one worker each: no folder to share them in (%s)", exc)
            return lambda: None
        os.environ[ENV] = f"{os.getpid()}:{folder}"
        owner = os.getpid()

        def done() -> None:
            if os.getpid() == owner:  # not in a worker that inherited this hook
                shutil.rmtree(folder, ignore_errors=True)
                if os.environ.get(ENV, "").endswith(folder):
                    os.environ.pop(ENV, None)

        atexit.register(done)
        return done

    # -- the worker's thread ---------------------------------------------------------------

    def _join(self) -> bool:
        """Listen in the folder once this process serves an app (helpers the supervisor starts,
        such as multiprocessing's resource tracker, never do); False while it does not yet."""
        if self.folder is None or not self.rt.apps:
            return False
        try:
            self._listener = _listen(os.path.join(self.folder, _SOCKET.format(pid=os.getpid())))
        except OSError as exc:
            logger.warning("otel-perf: stats cover this worker only: no socket in %s (%s)", self.folder, exc)
            self.folder = None
            return False
        return True

    def _run(self) -> None:
        next_history = time.monotonic()
        started = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_history:
                try:
                    self.history.add(Snapshot.capture(self.rt))
                except Exception as exc:
                    guard.internal_error("stats.history", exc)
                next_history = now + HISTORY_EVERY_S
            wait = max(0.05, next_history - time.monotonic())
            if self._listener is None and self.folder is not None and not self._join():
                # Not serving an app yet: look again soon while starting, then now and then.
                self._stop.wait(min(wait, 0.2 if now - started < 30 else 5.0))
                continue
            listener = self._listener
            if listener is None:
                self._stop.wait(wait)
                continue
            try:
                listener.settimeout(wait)
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                self._stop.wait(1.0)  # closed under us, or out of descriptors: do not spin
                continue
            with conn:
                try:
                    self._answer(conn)
                except Exception as exc:
                    guard.internal_error("stats.share.answer", exc)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(ASK_TIMEOUT_S)
        request = json.loads(_read_all(conn, 4096) or b"{}")
        conn.sendall(json.dumps(self.local_part(request)).encode())

    def local_part(self, request: dict[str, Any]) -> dict[str, Any]:
        """This worker's answer to ``request`` (``minutes``, ``reset``)."""
        if request.get("reset"):
            self.rt.findings.clear()
        current = Snapshot.capture(self.rt)
        minutes = request.get("minutes")
        base = self.history.at(current.at - 60.0 * float(minutes)) if minutes else None
        return {
            "id": worker_id(self.rt),
            "current": current.to_json(),
            "base": base.to_json() if base is not None else None,
        }

    # -- the answering worker -----------------------------------------------------------------

    def gather(self, minutes: int | None = None, reset: bool = False) -> Gathered:
        """Every worker's snapshot (this one's included) and what to subtract from each."""
        request = {"minutes": minutes, "reset": reset}
        answers = [self.local_part(request)]
        out = Gathered(shared=self.folder is not None)
        if self.folder is not None:
            more, out.missing = _ask_all(self.folder, request)
            answers += more
        baseline = self._load_baseline()
        for answer in answers:
            current = Snapshot.from_json(answer["current"])
            base = Snapshot.from_json(answer["base"]) if answer.get("base") else None
            reset_base = baseline[1].get(answer["id"]) if baseline is not None else None
            if reset_base is not None and (base is None or reset_base.at > base.at):
                base = reset_base
            out.parts.append((str(answer["id"]), current, base))
        return out

    def reset(self) -> int:
        """Start a new window in every worker; returns how many workers answered."""
        gathered = self.gather(reset=True)
        now = time.time()
        workers = {wid: current for wid, current, _ in gathered.parts}
        if self.folder is None:
            with self._lock:
                self.baseline = (now, workers)
        else:
            doc = {"at": now, "workers": {k: v.to_json() for k, v in workers.items()}}
            _write_atomic(os.path.join(self.folder, _BASELINE), json.dumps(doc).encode())
        return len(gathered.parts)

    def _load_baseline(self) -> tuple[float, dict[str, Snapshot]] | None:
        if self.folder is None:
            with self._lock:
                return self.baseline
        try:
            with open(os.path.join(self.folder, _BASELINE), "rb") as f:
                doc = json.loads(f.read(MAX_ANSWER))
            return float(doc["at"]), {k: Snapshot.from_json(v) for k, v in doc["workers"].items()}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("otel-perf: stats baseline unreadable, ignored (%s)", exc)
            return None


# -- the folder -----------------------------------------------------------------------------


def _base_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"otel-perf-{os.geteuid()}")


def _private_dir(path: str) -> bool:
    """``path`` is a directory of ours that nobody else may enter (not a symlink someone planted)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_folder() -> str:
    base = _base_dir()
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    if not _private_dir(base):
        raise OSError(f"{base} is not a private directory of this user")
    for name in os.listdir(base):  # servers that were killed left theirs
        pid, _, _ = name.partition("-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    folder = os.path.join(base, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(folder, 0o700)
    return folder


def _inherited_folder() -> str | None:
    """The folder our supervisor made, when this process is one of its workers."""
    value = os.environ.get(ENV, "")
    pid, _, folder = value.partition(":")
    if not pid.isdigit() or int(pid) != os.getppid() or not folder:
        return None  # not set, or set for our parent's parent (a process the app started)
    if not _private_dir(folder) or os.path.dirname(folder) != _base_dir():
        return None
    return folder


def _listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a process that had our pid before us
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


def _read_all(conn: socket.socket, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ValueError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _ask_all(folder: str, request: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The answers of every other worker in ``folder`` within ``ASK_TIMEOUT_S``, and who did not answer."""
    deadline = time.monotonic() + ASK_TIMEOUT_S
    answers: list[dict[str, Any]] = []
    missing: list[int] = []
    payload = json.dumps(request).encode()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return answers, missing
    for name in names:
        if not (name.startswith("w-") and name.endswith(".sock")):
            continue
        pid_text = name[2:-5]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        pid = int(pid_text)
        path = os.path.join(folder, name)
        left = deadline - time.monotonic()
        if left <= 0:
            missing.append(pid)
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(left)
                sock.connect(path)
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                answers.append(json.loads(_read_all(sock, MAX_ANSWER)))
        except (ConnectionRefusedError, FileNotFoundError):
            if not _alive(pid):  # an exited worker's socket
                with contextlib.suppress(OSError):
                    os.unlink(path)
            else:
                missing.append(pid)
        except (OSError, ValueError):
            missing.append(pid)
    return answers, missing


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _after_fork_in_child() -> None:
    from otel_perf._core import runtime

    rt = runtime.get()
    share = getattr(getattr(rt, "stats_endpoint", None), "share", None)
    if isinstance(share, Share):
        try:
            share.after_fork()
        except Exception as exc:  # a worker must start whatever happens here
            logger.warning("otel-perf: stats cover this worker only: %s", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
