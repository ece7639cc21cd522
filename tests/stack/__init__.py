"""Static checks of the shipped stack: collector configs, Grafana provisioning, Prometheus
rules, compose and Kubernetes manifests.

No backend runs here; the checks that need a binary (promtool, amtool) skip when it is not
installed locally and fail under ``CI=true``.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from support.procs import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = ROOT / "collector-config"
DEPLOY_DIR = ROOT / "deploy"

# Debian package that ships each binary the checks call.
_APT_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def require_tool(name: str) -> str:
    """Path of the binary `name`; skip the test when it is missing (fail under CI=true)."""
    path = shutil.which(name)
    if path is None:
        package = _APT_PACKAGES.get(name, name)
        skip_or_fail(f"{name} is not installed (Debian package {package})")
    return path


def require_module(name: str, pip_name: str) -> ModuleType:
    """Import `name`; skip the test when it is missing (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail(f"Python package {pip_name} is not installed (pip install {pip_name})")


def run(args: list[str], cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a checker; the result carries stdout+stderr for assertion messages."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_script(path: Path) -> ModuleType:
    """Import a stand-alone script (a generator under deploy/) as a module."""
    spec = importlib.util.spec_from_file_location(f"_stack_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
