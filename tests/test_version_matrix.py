"""The version matrix proves the bounds we declare: `.ci/constraints-oldest.txt` pins exactly the lower
bounds of pyproject.toml (its dependencies and every extra but dev), `.ci/matrix` installs every extra
and runs the oldest environment on the oldest Python we declare, and the README's version table has a
row for each pinned package with its oldest version."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Pinned although pyproject does not declare it: the oldest release FastAPI's own pin allows.
NOT_OURS = {"starlette"}


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())  # type: ignore[no-any-return]


def _extras() -> dict[str, list[str]]:
    """Every extra of pyproject.toml but dev (the tools we develop with, not what users install)."""
    extras: dict[str, list[str]] = _pyproject()["project"]["optional-dependencies"]
    return {name: reqs for name, reqs in extras.items() if name != "dev"}


def _lower_bounds() -> dict[str, Version]:
    """Name -> lower bound of every runtime dependency, every extra but dev, and gunicorn (dev)."""
    project = _pyproject()["project"]
    dev = [r for r in project["optional-dependencies"]["dev"] if Requirement(r).name == "gunicorn"]
    bounds: dict[str, Version] = {}
    for text in [*project["dependencies"], *(r for reqs in _extras().values() for r in reqs), *dev]:
        req = Requirement(text)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text}: the matrix needs exactly one >= lower bound"
        name = canonicalize_name(req.name)
        assert bounds.get(name, lower[0]) == lower[0], f"{req.name}: two lower bounds in pyproject.toml"
        bounds[name] = lower[0]
    return bounds


def _pins() -> dict[str, Version]:
    pins = {}
    for raw in (ROOT / ".ci" / "constraints-oldest.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints-oldest.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_oldest_constraints_pin_exactly_the_declared_lower_bounds() -> None:
    bounds, pins = _lower_bounds(), _pins()
    assert {name: pins.get(name) for name in bounds} == bounds
    assert set(pins) - set(bounds) == NOT_OURS


def test_oldest_environment_runs_on_the_oldest_declared_python() -> None:
    declared = re.fullmatch(r">=\s*(\d+\.\d+)", _pyproject()["project"]["requires-python"])
    assert declared, "requires-python should be a plain >=X.Y"
    script = (ROOT / ".ci" / "matrix").read_text()
    assert re.search(rf"^OLDEST_PYTHON={re.escape(declared.group(1))}\b", script, re.M)


def test_the_matrix_installs_every_extra_and_shows_every_pinned_version() -> None:
    script = (ROOT / ".ci" / "matrix").read_text()
    installed = re.search(r"^EXTRAS=([\w,-]+)$", script, re.M)
    assert installed, ".ci/matrix should set EXTRAS=a,b,c (the extras oldest and newest install)"
    assert sorted(installed.group(1).split(",")) == sorted(_extras()), (
        "an extra of pyproject.toml is missing from .ci/matrix's EXTRAS (or EXTRAS names one that is gone)"
    )
    shown_text = re.search(r"^SHOWN=\((.*?)\)", script, re.M | re.S)
    assert shown_text, ".ci/matrix should list the packages it prints in SHOWN=(...)"
    shown = {canonicalize_name(name) for name in shown_text.group(1).split()}
    assert set(_pins()) - shown == set(), "each pinned package's version is printed for every environment"


def _readme_table() -> dict[str, tuple[str, str]]:
    """README's version table: package name -> (oldest, newest) cells (a row may name several)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| package | oldest (CI) |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3, f"README's version table: {line!r} should have three cells"
        for name in cells[0].split(","):
            rows[canonicalize_name(name.strip())] = (cells[1], cells[2])
    return rows


def test_the_readme_table_has_a_row_for_every_pin_with_its_oldest_version() -> None:
    rows = _readme_table()
    for name, version in _pins().items():
        assert name in rows, f"README's version table has no row naming {name} (pinned {version})"
        oldest = rows[name][0].split()[0]
        assert Version(oldest) == version, f"README's version table: {name} oldest {oldest}, pinned {version}"
        assert rows[name][1], f"README's version table: {name} has no newest version"


def test_each_integrations_oldest_version_is_the_pinned_one() -> None:
    """An integration switches itself off below its min_version: that must be the bound CI proves."""
    from otel_perf._integrations import REGISTRY

    pins = _pins()
    for row in REGISTRY:
        name = canonicalize_name(row.library)
        if row.library and name in pins:
            assert Version(row.min_version) == pins[name], (
                f"integration {row.name}: min_version {row.min_version}, but the matrix proves {pins[name]}"
            )
