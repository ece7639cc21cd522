"""Turning integrations on: ours from the registry, the official ones from their entry points.

At bootstrap every row of :data:`otel_perf._integrations.REGISTRY` that is not switched off
is armed: rows without a trigger module are installed at once, the others when (or if) the
app imports their library.  Installing checks the library's version against the row's
minimum, runs the adapter's ``install`` and then its self-check; any failure is one
WARNING naming the library, its version and what is lost, and the app starts regardless.

Then, as ``opentelemetry-instrument`` does, every installed official instrumentation
(``opentelemetry_instrumentor`` entry points) is loaded, honouring
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` and skipping those whose library is missing or of
an unsupported version, and those a row of ours replaces (they would instrument the same
library twice: duplicate spans and metric streams).  Under ``opentelemetry-instrument``
itself, its loader does that second part and our distro's ``load_instrumentor`` skips the
replaced ones.

:func:`plan` computes the same decisions without installing anything, for
``otel-perf config`` and ``otel-perf instrumentations``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.imports import when_imported
from otel_perf._integrations import REGISTRY, DidNotEnable, Integration

logger = logging.getLogger("otel_perf")
INSTRUMENTOR_GROUP = "opentelemetry_instrumentor"


@dataclass
class Status:
    """What became of one integration (ours or official) in this process."""

    name: str
    #: "ours" or the distribution of the official instrumentation
    source: str
    #: waiting (armed, library not imported yet), active, skipped, failed, disabled, replaced, missing
    state: str
    detail: str = ""
    version: str = ""


#: name -> status, for the exit report, the stats endpoint and tests
STATUS: dict[str, Status] = {}
_lock = threading.Lock()


def note(status: Status) -> None:
    with _lock:
        STATUS[f"{status.source}:{status.name}"] = status


#: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=*`` switches every instrumentation off.
WILDCARD = "*"


def normal_name(name: str) -> str:
    """An instrumentation name as compared: ``aiohttp-client`` is ``aiohttp_client``."""
    return name.strip().lower().replace("-", "_")


def disabled_names(items: Iterable[str]) -> set[str]:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` entries, normalised, with each row's aliases."""
    names = {normal_name(x) for x in items if x.strip()}
    for row in REGISTRY:
        if WILDCARD in names or names & set(row.aliases):
            names.add(row.name)
    return names


def disabled_by(config: Any) -> set[str]:
    """What the configuration switches off: the disabled list, and the rows our own switches
    (``OTEL_PERF_SYSTEM_METRICS``, ``OTEL_PERF_LOOP_MONITOR``) turn off."""
    disabled = disabled_names(config.items("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
    if not config.flag("OTEL_PERF_SYSTEM_METRICS"):
        disabled.add("system_metrics")
    if not config.flag("OTEL_PERF_LOOP_MONITOR"):
        disabled.add("asyncio")
    return disabled


def replaced_names(disabled: set[str]) -> set[str]:
    """Official instrumentations a row of ours replaces (rows switched off replace nothing)."""
    return {normal_name(name) for row in REGISTRY if row.name not in disabled for name in row.replaces}


def library_version(distribution: str) -> str:
    if not distribution:
        return ""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _release(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def too_old(version: str, minimum: str) -> bool:
    """Whether release ``version`` is below ``minimum`` (pre-release tags ignored)."""
    return bool(version and minimum) and _release(version) < _release(minimum)


def activate(runtime: Any, disabled: set[str]) -> None:
    """Arm every row of ours that is not switched off."""
    for row in REGISTRY:
        if row.name in disabled:
            note(Status(row.name, "ours", "disabled", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
            continue
        if not row.modules:
            _install(row, runtime, None)
            continue
        note(Status(row.name, "ours", "waiting", f"until the app imports {row.modules[0]}"))
        # Every trigger is armed now, before any of them is imported: a module imported while
        # another one is being imported (fastapi.applications imports starlette's) could not be
        # hooked any more by then.
        for module in row.modules:
            when_imported(module, _installer(row, runtime))


def _installer(row: Integration, runtime: Any) -> Callable[[ModuleType], None]:
    return lambda module: _install(row, runtime, module)


def _install(row: Integration, runtime: Any, module: ModuleType | None) -> None:
    """Install ``row`` for one of its trigger modules (the adapter is called once per module)."""
    key = f"ours:{row.name}"
    previous = STATUS.get(key)
    if previous is not None and previous.state in ("failed", "skipped"):
        return  # said once already; another trigger module changes nothing
    first = previous is None or previous.state != "active"
    version = library_version(row.library)
    label = f"{row.library or row.name} {version}".strip()
    if first and too_old(version, row.min_version):
        _skip(row, version, f"{label} is older than {row.min_version}, the oldest we support")
        return
    try:
        adapter = importlib.import_module(f"otel_perf._integrations.{row.adapter}")
        adapter.install(runtime, module)
    except DidNotEnable as exc:
        _skip(row, version, f"{label}: {exc}")
        return
    except Exception as exc:
        if guard.raising():
            raise
        note(Status(row.name, "ours", "failed", f"{type(exc).__name__}: {exc}", version))
        logger.warning(
            "otel-perf: %s instrumentation skipped: installing it failed (%s: %s); lost: %s.",
            label,
            type(exc).__name__,
            exc,
            row.provides or "its telemetry",
        )
        return
    if not first:
        return
    note(Status(row.name, "ours", "active", row.provides, version))
    check = getattr(adapter, "self_check", None)
    if check is None:
        return
    try:
        lost = check(runtime)
    except Exception as exc:
        if guard.raising():
            raise
        lost = f"its self-check failed ({type(exc).__name__}: {exc})"
    if lost:
        runtime.note(f"{label} records nothing: {lost}")
        note(Status(row.name, "ours", "failed", lost, version))
        logger.warning("otel-perf: %s is installed but records nothing: %s", label, lost)


def _skip(row: Integration, version: str, reason: str) -> None:
    note(Status(row.name, "ours", "skipped", reason, version))
    logger.warning(
        "otel-perf: %s not instrumented: %s; lost: %s.", row.name, reason, row.provides or "its telemetry"
    )


# --- the official instrumentations ------------------------------------------------------------


def _instrumentors() -> Iterator[metadata.EntryPoint]:
    yield from metadata.entry_points(group=INSTRUMENTOR_GROUP)


def _dist_of(entry_point: metadata.EntryPoint) -> Any:
    return getattr(entry_point, "dist", None)


def official_decision(entry_point: metadata.EntryPoint, disabled: set[str], replaced: set[str]) -> Status:
    """Whether the official instrumentation behind ``entry_point`` is to be loaded, and why not."""
    dist = _dist_of(entry_point)
    source = getattr(dist, "name", "") or entry_point.value.split(":")[0]
    version = getattr(dist, "version", "") or ""
    name = entry_point.name
    key = normal_name(name)
    if key in disabled or WILDCARD in disabled:
        return Status(name, source, "disabled", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", version)
    if key in replaced:
        return Status(name, source, "replaced", f"ours instruments this library ({_replacer(key)})", version)
    conflict = _conflict(dist)
    if conflict:
        return Status(name, source, "missing", conflict, version)
    return Status(name, source, "waiting", "", version)


def _replacer(key: str) -> str:
    return next((row.name for row in REGISTRY if key in {normal_name(x) for x in row.replaces}), "")


def _conflict(dist: Any) -> str:
    """Why the instrumented library is missing or unsupported ("" when it is fine)."""
    if dist is None:
        return ""
    try:
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        found = get_dist_dependency_conflicts(dist)
    except Exception as exc:  # an instrumentation package without readable metadata
        return f"its requirements could not be read ({type(exc).__name__})"
    return str(found) if found else ""


def _instrumentor_conflict(instrumentor: Any) -> str:
    """Why the library of this one instrumentor is missing ("" when present).

    A package's requirements may name any of several libraries (the httpx package holds the
    httpx and the httpx2 instrumentors): the instrumentor's own dependencies say which it needs.
    """
    try:
        from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

        found = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
    except Exception:  # no readable dependencies: let instrument() decide
        return ""
    return str(found) if found else ""


def load_official(disabled: set[str], replaced: set[str]) -> None:
    """Load every installed official instrumentation not switched off, missing or replaced."""
    for entry_point in _instrumentors():
        status = official_decision(entry_point, disabled, replaced)
        if status.state != "waiting":
            note(status)
            continue
        try:
            instrumentor = entry_point.load()()
            missing = _instrumentor_conflict(instrumentor)
            if missing:  # one package, several libraries (httpx and httpx2): this one is absent
                status.state, status.detail = "missing", missing
                note(status)
                continue
            instrumentor.instrument(skip_dep_check=True)
        except ModuleNotFoundError as exc:  # its library is not installed: nothing to instrument
            status.state, status.detail = "missing", str(exc)
            note(status)
            continue
        except Exception as exc:
            if guard.raising():
                raise
            status.state, status.detail = "failed", f"{type(exc).__name__}: {exc}"
            logger.warning(
                "otel-perf: the official %s instrumentation (%s) failed to load: %s",
                entry_point.name,
                status.source,
                status.detail,
            )
        else:
            status.state = "active"
        note(status)


#: Database clients no adapter of ours instruments, with the official instrumentation that does
#: (its entry point name and package): used while that one is not active, their statements
#: would go unrecorded without a word.
UNCOVERED_CLIENTS: dict[str, tuple[str, str, str]] = {
    # module imported: (what the user knows it as, official entry point, its package)
    "psycopg2": ("psycopg2", "psycopg2", "opentelemetry-instrumentation-psycopg2"),
    "MySQLdb": ("mysqlclient", "mysqlclient", "opentelemetry-instrumentation-mysqlclient"),
    "pymssql": ("pymssql", "pymssql", "opentelemetry-instrumentation-pymssql"),
    "pymongo": ("pymongo", "pymongo", "opentelemetry-instrumentation-pymongo"),
    "cassandra": ("cassandra-driver", "cassandra", "opentelemetry-instrumentation-cassandra"),
}


def warn_uncovered(disabled: set[str]) -> None:
    """Arm a warning, on first import, for each client of :data:`UNCOVERED_CLIENTS` whose official
    instrumentation is not active here (and that the user did not switch off on purpose)."""
    from otel_perf._core.imports import when_imported

    active = {s.name for s in STATUS.values() if s.state == "active"}
    for module, (label, entry, package) in UNCOVERED_CLIENTS.items():
        if entry in active or normal_name(entry) in disabled or WILDCARD in disabled:
            continue

        def warn(_module: Any, label: str = label, package: str = package, entry: str = entry) -> None:
            logger.warning(
                "otel-perf: %s is in use and nothing instruments it: its statements get no spans, "
                "no db.client.operation.duration and no slow-query or N+1 findings. Install %s "
                "(its SQL is normalized before export), or switch this warning off with "
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=%s.",
                label,
                package,
                normal_name(entry),
            )

        when_imported(module, warn)


def run_hooks(group: str) -> None:
    """The ``opentelemetry_pre_instrument`` / ``_post_instrument`` hooks, as the official loader runs them."""
    for entry_point in metadata.entry_points(group=group):
        try:
            entry_point.load()()
        except Exception as exc:
            if guard.raising():
                raise
            logger.warning("otel-perf: %s hook %s failed: %s", group, entry_point.name, exc)


def plan(disabled: set[str]) -> list[Status]:
    """Every integration and what the bootstrap would do with it here, installing nothing."""
    out: list[Status] = []
    replaced = replaced_names(disabled)
    for row in REGISTRY:
        version = library_version(row.library)
        if row.name in disabled:
            out.append(Status(row.name, "ours", "disabled", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", version))
        elif row.library and not version:
            out.append(Status(row.name, "ours", "missing", f"{row.library} is not installed", version))
        elif too_old(version, row.min_version):
            reason = f"older than {row.min_version}, the oldest we support"
            out.append(Status(row.name, "ours", "skipped", reason, version))
        else:
            out.append(Status(row.name, "ours", "active", row.provides, version))
    for entry_point in _instrumentors():
        status = official_decision(entry_point, disabled, replaced)
        if status.state == "waiting":
            try:
                missing = _instrumentor_conflict(entry_point.load()())
            except Exception as exc:
                status.state, status.detail = "failed", f"{type(exc).__name__}: {exc}"
            else:
                status.state, status.detail = ("missing", missing) if missing else ("active", "")
        out.append(status)
    return out


# --- what instruments the libraries installed here (``otel-perf instrumentations``) ------------

DISTRIBUTION = "otel-perf-instrument"
_PREFIX = "opentelemetry-instrumentation-"


@dataclass
class Coverage:
    """One library installed here and what instruments it."""

    library: str
    version: str
    #: "ours", "official" (installed), "install" (an official one exists, not installed),
    #: "unsupported" (this version of the library is outside what the official one supports)
    by: str
    #: our row, or the official instrumentation's entry-point name
    name: str
    #: the official instrumentation requirement (as ``opentelemetry-bootstrap`` pins it)
    requirement: str = ""
    #: what to run to get it ("" when nothing is to install)
    install: str = ""
    detail: str = ""


def _our_extras() -> dict[str, str]:
    """Distribution (normalised) -> the extra of ours that installs it."""
    from packaging.requirements import Requirement

    extras: dict[str, str] = {}
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return extras
    for line in requires:
        try:
            req = Requirement(line)
        except Exception:
            continue
        marker = str(req.marker or "")
        if "extra ==" not in marker:
            continue
        extra = marker.split("extra ==", 1)[1].strip().strip("'\"")
        if extra in ("dev", "demo", "loadtest"):
            continue
        extras.setdefault(_dist_key(req.name), extra)
    return extras


def _dist_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _official_libraries() -> tuple[list[dict[str, str]], list[str]]:
    """contrib's library -> instrumentation table (what ``opentelemetry-bootstrap`` reads)."""
    try:
        from opentelemetry.instrumentation import bootstrap_gen
    except ImportError:  # an opentelemetry-instrumentation without it
        return [], []
    return list(bootstrap_gen.libraries), list(getattr(bootstrap_gen, "default_instrumentations", []))


def coverage() -> list[Coverage]:
    """For every library installed here that we or an official instrumentation instrument: by what,
    and what to install for the ones not instrumented yet."""
    from packaging.requirements import Requirement

    extras = _our_extras()
    ours_by_library = {_dist_key(row.library): row for row in REGISTRY if row.library}
    replaced = {normal_name(name): row for row in REGISTRY for name in row.replaces}
    out: list[Coverage] = []
    seen: set[tuple[str, str]] = set()
    libraries, defaults = _official_libraries()
    entries = [(entry["library"], entry["instrumentation"]) for entry in libraries]
    entries += [("", requirement) for requirement in defaults]  # the standard library's
    for library_spec, instrumentation in entries:
        try:
            package = Requirement(instrumentation).name
            lib_req = Requirement(library_spec) if library_spec else None
        except Exception:  # a row this packaging cannot read: leave it out
            continue
        entry_name = normal_name(package.removeprefix(_PREFIX))
        if lib_req is not None:
            library = lib_req.name
            version = library_version(library)
            if not version:
                continue
        else:
            library, version = "(standard library)", ""
        if (library, entry_name) in seen:
            continue
        seen.add((library, entry_name))
        row = replaced.get(entry_name)
        if row is not None:
            out.append(Coverage(library, version, "ours", row.name, instrumentation, detail=row.provides))
            continue
        installed = library_version(package)
        extra = extras.get(_dist_key(package))
        hint = f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install '{instrumentation}'"
        if lib_req is not None and version and not _satisfies(lib_req, version):
            out.append(Coverage(library, version, "unsupported", entry_name, instrumentation,
                                detail=f"{package} supports {lib_req}"))
        elif installed:
            out.append(Coverage(library, version, "official", entry_name, instrumentation,
                                detail=f"{package} {installed}"))
        else:
            out.append(Coverage(library, version, "install", entry_name, instrumentation, hint))
    listed = {c.library.lower() for c in out}
    for row in ours_by_library.values():  # ours with no official counterpart (uvicorn, ...)
        version = library_version(row.library)
        if version and row.library.lower() not in listed:
            out.append(Coverage(row.library, version, "ours", row.name, detail=row.provides))
    return sorted(out, key=lambda c: (c.library == "(standard library)", c.library.lower(), c.name))


def _satisfies(requirement: Any, version: str) -> bool:
    try:
        return bool(requirement.specifier.contains(version, prereleases=True))
    except Exception:  # a version packaging cannot parse: let the instrumentation decide
        return True
