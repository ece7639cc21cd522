"""Issue 7: every process model, real servers, real receiver, exact counts.

Each test runs ``tests/apps/workers_app.py`` under ``otel-perf-instrument`` with one of the
ways Python web apps are served, sends N requests (each on a new connection, so they spread
over the workers) and checks, per worker process (the pid each response reports):

* it exported its spans, HTTP metrics and logs under its own ``service.instance.id``, with
  its own ``process.pid``, one id per process and one process per id;
* the exported counts per worker equal the requests that worker answered, so the totals
  add up to exactly N (none lost, none doubled), and stay so over later exports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from support.launch import APPS, BIN, launcher
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port, skip_or_fail, until_serving

pytestmark = pytest.mark.slow

ROUTE = "/items/{item_id}"
DURATION = "http.server.request.duration"
N = 40


def _start(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver,
    args: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    name: str = "server",
) -> str:
    full = {
        "OTEL_SERVICE_NAME": "workers",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "PYTHONPATH": str(APPS),
        "APP_PORT": str(port),
        **receiver.exporter_env(),
        **(env or {}),
    }
    proc = app_process([launcher(), *args], full, cwd=cwd, name=name)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello", timeout=60)
    return base


def _send(base: str, n: int) -> Counter[int]:
    """``n`` requests to /items/{i}, each on its own connection; requests answered per pid."""
    per_pid: Counter[int] = Counter()
    for i in range(n):
        with httpx.Client() as client:
            r = client.get(f"{base}/items/{i % 3 + 1}")
        assert r.status_code == 200, r.text
        per_pid[r.json()["pid"]] += 1
    return per_pid


def _exported_per_instance(receiver: OTLPReceiver) -> dict[str, dict[str, object]]:
    """instance id -> pids seen and exported spans / histogram count / logs of the test route."""
    out: dict[str, dict[str, object]] = {}

    def entry(resource: Mapping[str, object]) -> dict[str, object]:
        e = out.setdefault(
            str(resource["service.instance.id"]), {"pids": set(), "spans": 0, "count": 0, "logs": 0}
        )
        pids = e["pids"]
        assert isinstance(pids, set)
        pids.add(resource.get("process.pid"))
        return e

    for span in receiver.spans(name=f"GET {ROUTE}", kind="SERVER"):
        e = entry(span.resource)
        e["spans"] = int(str(e["spans"])) + 1
    for point in receiver.latest_points(DURATION, {"http.route": ROUTE}):
        e = entry(point.resource)
        e["count"] = int(str(e["count"])) + (point.count or 0)
    for record in receiver.logs("fetching item"):
        e = entry(record.resource)
        e["logs"] = int(str(e["logs"])) + 1
    return out


def _check_exact(receiver: OTLPReceiver, per_pid: Counter[int], min_workers: int) -> None:
    n = sum(per_pid.values())

    def counts() -> tuple[int, int, int]:
        return (
            receiver.histogram_count(DURATION, {"http.route": ROUTE}),
            len(receiver.spans(name=f"GET {ROUTE}", kind="SERVER")),
            len(receiver.logs("fetching item")),
        )

    try:
        receiver.wait_for(lambda: counts() == (n, n, n), timeout=20, what=f"exactly {n} requests")
    except AssertionError:
        raise AssertionError(
            f"(metric count, spans, logs) = {counts()}, expected {n} each; served per pid {dict(per_pid)}; "
            f"exported per instance {_exported_per_instance(receiver)}"
        ) from None
    time.sleep(1.5)  # three more metric exports: cumulative totals must not grow (no doubling)
    assert receiver.histogram_count(DURATION, {"http.route": ROUTE}) == n
    assert len(receiver.spans(name=f"GET {ROUTE}", kind="SERVER")) == n

    assert len(per_pid) >= min_workers, f"requests were served by {dict(per_pid)} only"
    exported = _exported_per_instance(receiver)
    by_pid: dict[object, list[str]] = {}
    for instance, e in exported.items():
        pids = e["pids"]
        assert isinstance(pids, set)
        assert len(pids) == 1, f"instance {instance} exported under several pids {pids}"
        by_pid.setdefault(next(iter(pids)), []).append(instance)
    for pid, served in per_pid.items():
        instances = by_pid.get(pid, [])
        assert len(instances) == 1, f"worker {pid} exported under instance ids {instances}"
        e = exported[instances[0]]
        assert (e["spans"], e["count"], e["logs"]) == (served, served, served), (pid, e, dict(per_pid))
    # Every signal of a worker carries the same identity: its metrics' instance ids are its spans' ones.
    metric_ids = {p.resource["service.instance.id"] for p in receiver.metric_points("process.cpu.time")}
    assert {i for ids in by_pid.values() for i in ids} <= metric_ids


@pytest.mark.matrix
def test_uvicorn_workers(otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]) -> None:
    port = free_port()
    base = _start(
        app_process,
        otlp_receiver,
        [
            str(BIN / "uvicorn"),
            "workers_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "4",
        ],
        port,
    )
    until_serving(base + "/version", 2)
    _check_exact(otlp_receiver, _send(base, N), min_workers=2)


# .ci/matrix runs the --preload one (forked after the app and our bootstrap are imported)
@pytest.mark.parametrize(
    "preload", [False, pytest.param(True, marks=pytest.mark.matrix)], ids=["fork", "preload"]
)
def test_gunicorn_uvicorn_worker(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], preload: bool
) -> None:
    port = free_port()
    args = [
        str(BIN / "gunicorn"),
        "-w",
        "4",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-b",
        f"127.0.0.1:{port}",
        "workers_app:app",
    ]
    if preload:
        args.insert(1, "--preload")
    base = _start(app_process, otlp_receiver, args, port)
    until_serving(base + "/version", 2)
    _check_exact(otlp_receiver, _send(base, N), min_workers=2)


def test_python_app_calling_uvicorn_run(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    base = _start(app_process, otlp_receiver, [sys.executable, str(APPS / "workers_app.py")], port)
    _check_exact(otlp_receiver, _send(base, 10), min_workers=1)


@pytest.fixture(scope="module")
def fastapi_cli_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """fastapi-cli (what ``fastapi run`` needs) in a folder for PYTHONPATH.

    Installed without dependencies on purpose: ``fastapi[standard]`` would pull uvloop and
    httptools into the shared environment and change what ``uvicorn`` picks for every test.
    """
    target = tmp_path_factory.mktemp("fastapi_cli")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            "fastapi-cli",
            "typer",
            "rich-toolkit",
            "rich",
            "shellingham",
            "markdown-it-py",
            "mdurl",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"could not install fastapi-cli for `fastapi run`: {result.stderr[-500:]}")
    return str(target)


def test_fastapi_run_workers(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], fastapi_cli_path: str
) -> None:
    port = free_port()
    base = _start(
        app_process,
        otlp_receiver,
        [
            str(BIN / "fastapi"),
            "run",
            str(APPS / "workers_app.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        port,
        env={"PYTHONPATH": os.pathsep.join([fastapi_cli_path, str(APPS)])},
    )
    _check_exact(otlp_receiver, _send(base, N), min_workers=1)


def test_uvicorn_reload_keeps_telemetry_after_a_code_change(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    shutil.copy(APPS / "workers_app.py", tmp_path / "workers_app.py")
    port = free_port()
    base = _start(
        app_process,
        otlp_receiver,
        [
            str(BIN / "uvicorn"),
            "workers_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload",
            "--reload-dir",
            str(tmp_path),
        ],
        port,
        env={"PYTHONPATH": str(tmp_path)},
        cwd=str(tmp_path),
    )
    before = _send(base, 5)
    source = tmp_path / "workers_app.py"
    source.write_text(source.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))

    def reloaded() -> bool:
        try:
            return bool(httpx.get(base + "/version", timeout=2).json()["version"] == "v2")
        except (httpx.HTTPError, ValueError):
            return False

    otlp_receiver.wait_for(reloaded, timeout=30, what="the reloaded app serving v2")
    after = _send(base, 7)
    assert not set(before) & set(after), "the reload did not start a new server process"
    _check_exact(otlp_receiver, before + after, min_workers=2)


FORK_WHILE_BUSY = """
import os, threading, time
from otel_perf._core import runtime

rt = runtime.get()
reader = rt.pipeline.readers[0]
consumer = rt.pipeline.meter_provider._measurement_consumer
histogram = rt.inst.server_duration
held = threading.Event()

def busy():
    # The parent's metric thread mid-collection (briefly), mid-export (a stalled collector)
    # and inside one of our instruments, all at the moment of the fork.
    with reader._export_lock, histogram._lock:
        consumer._lock.acquire()
        held.set()
        time.sleep(0.3)
        consumer._lock.release()
        time.sleep(3)

threading.Thread(target=busy, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    done = threading.Event()
    def work():
        histogram.record(0.25, ("/forked", "GET", 200, ""))
        # what every request records: the three histograms share one lock, the child's own
        group = rt.inst.request_metrics
        group.record(0.25, 10, 1, ("/forked", "GET", 200, ""), ("/forked", "GET"), 0, 0)
        assert group._lock is histogram._lock is rt.inst.response_size._lock
        assert group._lock is rt.inst.queries_per_request._lock
        reader.collect()
        done.set()
    threading.Thread(target=work, daemon=True).start()
    os._exit(0 if done.wait(10) else 3)
_, status = os.waitpid(pid, 0)
print("child", pid, "exit", os.waitstatus_to_exitcode(status))
"""


def _run_script(
    script: str, receiver: OTLPReceiver, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """``python -c script`` under the launcher, exporting to ``receiver``; it must exit 0."""
    result = subprocess.run(
        [launcher(), sys.executable, "-c", script],
        env=clean_environ({**receiver.exporter_env(), "OTEL_PERF__RAISE_ERRORS": "1", **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fork_while_the_metric_thread_holds_locks(otlp_receiver: OTLPReceiver) -> None:
    """A worker forked while the master collects or exports metrics still exports its own."""
    result = _run_script(
        FORK_WHILE_BUSY,
        otlp_receiver,
        {
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    child = int(result.stdout.split()[1])
    assert result.stdout.split()[-1] == "0", f"the child could not record or export: {result.stdout}"
    points = otlp_receiver.wait_for(
        lambda: [
            p for p in otlp_receiver.metric_points(DURATION) if p.attributes.get("http.route") == "/forked"
        ],
        what="the forked child's metric",
    )
    assert {p.resource["process.pid"] for p in points} == {child}


FORK_AFTER_EXPORTING = """
import os
from otel_perf._core import runtime
from otel_perf._setup import fork
try:
    from otel_perf._export.otlp_transport import _ALL as ours
except ImportError:  # exporter packages before 1.45: no pluggable transport, the SDK's only
    ours = ()

pipeline = runtime.get().pipeline

def held():  # open connections: urllib3 pools (the SDK's transports) and our http.client ones
    pools = sum(len(p.pools) for p in fork._http_pools(pipeline.exporters))
    return pools + sum(t._connection is not None for t in ours)

pipeline.meter_provider.force_flush()  # the parent's exporter opens its keep-alive connection
print("parent", held())
pid = os.fork()
if pid == 0:
    os._exit(10 + held())
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status) - 10)
"""


@pytest.mark.matrix
@pytest.mark.parametrize("probes_off", ["", "otlp-lean-transport"], ids=["http.client", "sdk-transport"])
def test_a_forked_child_opens_its_own_exporter_connections(
    otlp_receiver: OTLPReceiver, probes_off: str
) -> None:
    """gunicorn --preload: the master exports before it forks; a worker sharing the master's
    keep-alive socket lost span batches (responses read by the wrong process).  Both our
    http.client transport and the SDK's own (urllib3 pools, probe off) drop theirs in the child."""
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_PERF__PROBES_OFF": probes_off}
    result = _run_script(FORK_AFTER_EXPORTING, otlp_receiver, env)
    lines = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("parent", "child")))
    assert int(lines["parent"]) >= 1, result.stdout  # the parent holds a kept-alive connection
    assert int(lines["child"]) == 0, result.stdout  # the child kept none of them


FORK_AFTER_SPANS = """
import os, sqlite3
from opentelemetry import trace
from otel_perf._core import runtime

flush = runtime.get().pipeline.tracer_provider.force_flush
db = sqlite3.connect(":memory:")
with trace.get_tracer("shop").start_as_current_span("in-parent"):  # the SDK's span
    pass
db.execute("CREATE TABLE in_parent (x)")  # ours (a statement's span)
flush()  # the parent's span encoder has encoded its resource (gunicorn --preload: the master's)
pid = os.fork()
if pid == 0:
    with trace.get_tracer("shop").start_as_current_span("in-child"):
        pass
    db.execute("CREATE TABLE in_child (x)")
    os._exit(0 if flush() else 1)
_, status = os.waitpid(pid, 0)
print("parent", os.getpid(), "child", pid, "status", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.matrix
def test_a_forked_childs_spans_carry_its_own_identity(otlp_receiver: OTLPReceiver) -> None:
    """The worker's spans name the worker (pid, service.instance.id), not the master whose
    encoder had already encoded the shared resource before the fork."""
    env = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    result = _run_script(FORK_AFTER_SPANS, otlp_receiver, env)
    words = result.stdout.split()
    parent, child = int(words[words.index("parent") + 1]), int(words[words.index("child") + 1])
    assert words[-1] == "0", result.stdout
    otlp_receiver.wait_for(lambda: len(otlp_receiver.spans()) >= 4, what="the parent's and child's spans")
    spans = otlp_receiver.spans()
    side = lambda span, name: span.name == name or any(  # noqa: E731
        name.replace("-", "_") in str(v) for v in span.attributes.values()
    )
    in_parent = [span.resource for span in spans if side(span, "in-parent")]
    in_child = [span.resource for span in spans if side(span, "in-child")]
    assert len(in_parent) == len(in_child) == 2, [(span.name, span.attributes) for span in spans]
    assert [r["process.pid"] for r in in_parent] == [parent, parent]
    assert [r["process.pid"] for r in in_child] == [child, child]
    ids = {r["service.instance.id"] for r in in_parent}
    assert not ids & {r["service.instance.id"] for r in in_child}


LAZY_IMPORTS = r"""
import builtins, logging, sys, threading, time
imported = {}
real_import = builtins.__import__

def watching_import(name, *args, **kwargs):
    before = set(sys.modules)
    module = real_import(name, *args, **kwargs)
    if threading.current_thread() is not threading.main_thread():
        imported.setdefault(threading.current_thread().name, set()).update(set(sys.modules) - before)
    return module

builtins.__import__ = watching_import
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("first"):
    logging.getLogger("t").warning("first log")
time.sleep(2)  # the export threads' first exports (not a flush: that exports from this thread)
print({name: sorted(mods) for name, mods in imported.items() if mods})
"""


def test_export_threads_import_nothing_a_fork_could_freeze(otlp_receiver: OTLPReceiver) -> None:
    """Export threads must not import lazily: a fork mid-import leaves the worker's import lock held.

    A module being imported holds its import lock until it has run; a fork at that moment
    gives the worker a lock held by a thread it does not have, and every later import of
    that module (here: the idna codec urllib3 needs for each new connection) blocks forever.
    Found as a gunicorn --preload worker that never exported.
    """
    result = _run_script(
        LAZY_IMPORTS,
        otlp_receiver,
        {
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
        },
    )
    otlp_receiver.wait_for(lambda: otlp_receiver.spans(name="first"), what="the span export")
    assert otlp_receiver.logs("first log"), "the log export did not arrive"
    assert result.stdout.strip().splitlines()[-1] == "{}", f"imported by export threads: {result.stdout}"


HEAP = r"""
import gc, weakref
from opentelemetry import trace
provider = trace.get_tracer_provider()          # built during start-up
tracked = {id(o) for o in gc.get_objects()}     # what the collector still walks
class Node:
    pass
node = Node()
node.cycle = node                               # the app's own cyclic garbage
alive = weakref.ref(node)
del node
gc.collect()
from opentelemetry.sdk.trace import TracerProvider as Sdk
print(gc.get_freeze_count(), id(provider) in tracked, isinstance(provider, Sdk), alive() is None)
"""


@pytest.mark.parametrize("freeze", ["true", "false"])
def test_start_up_heap_is_frozen_and_the_apps_garbage_still_collected(
    otlp_receiver: OTLPReceiver, freeze: str
) -> None:
    """The launcher moves start-up objects out of the app's collections; the app's own are not."""
    env = {"OTEL_PERF_GC_FREEZE": freeze, "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    frozen, provider_walked, sdk_provider, collected = _run_script(HEAP, otlp_receiver, env).stdout.split()
    assert sdk_provider == "True", "the global tracer provider is not the SDK's"
    assert collected == "True", "a cycle the app made after start-up was not collected"
    if freeze == "true":
        assert int(frozen) > 10_000, f"only {frozen} start-up objects frozen"
        assert provider_walked == "False", "the SDK's tracer provider is still walked by every collection"
    else:
        assert (frozen, provider_walked) == ("0", "True")
