"""The shipped browser bundle is what its lockfile and build script make, byte for byte, and
stays small and CSP-friendly. The rebuild runs ``npm ci`` against the npm registry in a copy of
``src/otel_perf/_browser`` (so the working tree is never touched)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support.procs import skip_or_fail

BROWSER = Path(__file__).resolve().parent.parent / "src" / "otel_perf" / "_browser"
BUNDLE = BROWSER / "browser.js"
MAX_GZIPPED = 60_000


def test_the_bundle_is_small_and_needs_no_eval() -> None:
    code = BUNDLE.read_bytes()
    gzipped = len(gzip.compress(code, compresslevel=9))
    assert gzipped < MAX_GZIPPED, f"browser.js is {gzipped} bytes gzipped; the budget is {MAX_GZIPPED}"
    text = code.decode("utf-8")
    assert "eval(" not in text and "new Function" not in text  # CSP without 'unsafe-eval'
    assert text.startswith("/*! otel-perf-instrument browser script. Bundles (Apache-2.0): ")


def test_the_lockfile_pins_every_package_and_names_no_registry() -> None:
    lock = json.loads((BROWSER / "package-lock.json").read_text())
    manifest = json.loads((BROWSER / "package.json").read_text())
    assert manifest["private"] is True
    for name, spec in manifest["dependencies"].items():
        assert spec[0].isdigit(), f"{name} is not pinned exactly: {spec}"
    for path, package in lock["packages"].items():
        if path:
            assert package.get("integrity", "").startswith("sha512-"), path
            assert "resolved" not in package, path


@pytest.mark.slow
def test_npm_ci_and_the_build_reproduce_the_committed_bundle(tmp_path: Path) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        skip_or_fail("node and npm are needed to rebuild the browser bundle")
    work = tmp_path / "browser"
    shutil.copytree(BROWSER, work, ignore=shutil.ignore_patterns("node_modules"))
    install = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        pytest.fail(f"npm ci failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
    check = subprocess.run(
        [node, "build.mjs", "--check"], cwd=work, capture_output=True, text=True, timeout=120, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "up to date" in check.stdout
