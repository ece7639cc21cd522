"""The version matrix proves the bounds we declare: `.ci/constraints-oldest.txt` pins exactly the lower
bounds of pyproject.toml, and `.ci/matrix` runs the oldest environment on the oldest Python we declare."""

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


def _lower_bounds() -> dict[str, Version]:
    """Name -> lower bound of every runtime dependency, the demo extra, and gunicorn (dev)."""
    project = _pyproject()["project"]
    dev = [r for r in project["optional-dependencies"]["dev"] if Requirement(r).name == "gunicorn"]
    bounds = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["demo"], *dev]:
        req = Requirement(text)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text}: the matrix needs exactly one >= lower bound"
        bounds[canonicalize_name(req.name)] = lower[0]
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


def test_the_readme_table_names_every_oldest_pin() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| package | oldest (CI) |", 1)[1].split("\n\n", 1)[0]
    for line in (ROOT / ".ci" / "constraints-oldest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert version.strip() in table, f"README's version table lacks {name} {version}"
