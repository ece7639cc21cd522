"""Issue 7: the installed dependencies have no known vulnerabilities (pip-audit).

``pip-audit`` checks every distribution in this environment against PyPI's advisory data
(the JSON API).  When that data cannot be reached -- no network, or an index mirror that has
no JSON API, where pip-audit reports every package as "not found on PyPI" and then, wrongly,
"no known vulnerabilities" -- the test skips and says so, locally and in CI: an offline
build is not a failed audit.  Findings in the allow-list below are explained; anything else
fails the test with the advisory ids and the fixed versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.procs import skip_or_fail

pytestmark = pytest.mark.slow

#: package -> why a finding in it does not affect users of otel-perf-instrument.
EXPLAINED = {
    "setuptools": "the bootstrap copy `python -m venv` puts in Python 3.11 environments; nothing of ours "
    "imports it and the package builds with hatchling. Upgrade it where the environment is created.",
    "pip": "the installer of the test environment, not a dependency of the package.",
}


def _audit(tmp_path: Path) -> dict[str, Any]:
    tool = Path(sys.executable).with_name("pip-audit")
    if not tool.exists():
        skip_or_fail("pip-audit is not installed (it is in the `dev` extra: pip install -e '.[dev]')")
    out = tmp_path / "audit.json"
    result = subprocess.run(
        [
            str(tool),
            "--local",
            "--skip-editable",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(out),
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if not out.exists():
        pytest.skip(f"pip-audit could not reach the advisory data: {result.stderr.strip()[-300:]}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_installed_dependencies_have_no_known_vulnerabilities(tmp_path: Path) -> None:
    deps = _audit(tmp_path)["dependencies"]
    audited = [d for d in deps if not d.get("skip_reason")]
    if not audited:
        reasons = {d.get("skip_reason", "")[:60] for d in deps}
        pytest.skip(
            f"no dependency could be audited ({len(deps)} skipped, e.g. {sorted(reasons)[:2]}): "
            "the advisory data (PyPI JSON API) is unreachable from here"
        )
    findings = [
        (d["name"], d["version"], v["id"], v.get("fix_versions", []))
        for d in audited
        for v in d.get("vulns", [])
    ]
    explained = [f for f in findings if f[0] in EXPLAINED]
    for name, version, vuln, fixed in explained:
        print(f"explained: {name} {version} {vuln} (fixed in {fixed}): {EXPLAINED[name]}")
    unexplained = [f for f in findings if f[0] not in EXPLAINED]
    assert not unexplained, "\n".join(f"{n} {v}: {i}, fixed in {fx}" for n, v, i, fx in unexplained)
