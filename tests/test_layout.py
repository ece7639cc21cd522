"""The package's shape: a small public API, no import cycles, and layers that only look down.

The import graph is read from the source (the AST of every module under ``src/otel_perf``),
not by importing it.  Only **module-level** imports count: those run when the module is
first imported, so they are what can form a cycle and what pulls a layer in.  Imports under
``if TYPE_CHECKING:`` (types only) and imports inside functions (deferred until called, the
way the CLI and the bootstrap load optional parts) are left out on purpose; an import in a
``try:`` at module level counts.

Layers, lowest first; a module may import, at module level, only from its own layer or
below::

    _config, _names, _version  <  _metrics  <  _analysis  <  _core  <  otel_perf (public API)
        <  _export  <  _integrations  <  _setup  <  _cli, _bootstrap, _demo, _loadtest

``otel_perf/__init__.py``, the public API, re-exports from ``_core`` and ``_version``: it sits
right above ``_core``, so the layers above it may import a public name from it
(``from otel_perf import __version__``).

:data:`KNOWN_UPWARD` lists the upward imports found when this test was written, in code
owned elsewhere, each with what would fix it; the test fails on any new one, and on a listed
one that is gone (so the list shrinks as they are fixed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import otel_perf

SRC = Path(otel_perf.__file__).resolve().parent
PACKAGE = "otel_perf"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_config", "_names", "_version"),
    ("_metrics",),
    ("_analysis",),
    ("_core",),
    (PACKAGE,),
    ("_export",),
    ("_integrations",),
    ("_setup",),
    ("_cli", "_bootstrap", "_demo", "_loadtest"),
)
#: (``_metrics/views.py`` still reads its YAML with ``_analysis/budgets.py``'s reader, inside the
#: functions that read a views file, which only runs when one is configured; the reader belongs in
#: a module below both.)
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if "node_modules" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: into if/try/with blocks, not into functions or classes'
    methods, nor under ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)
        elif isinstance(node, ast.ClassDef):
            yield from _module_level([n for n in node.body if not isinstance(n, ast.FunctionDef)])
        else:
            yield node


def _resolve(name: str) -> str | None:
    """The module of ours that importing ``name`` runs (None: not ours)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Our modules ``module`` imports at module level."""
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # ``from package import submodule`` imports the submodule
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                out.add(resolved)
    return out


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module != PACKAGE else PACKAGE
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: its folder {top!r} has no layer in tests/test_layout.py LAYERS")


def test_public_api_is_exactly_all_sorted() -> None:
    assert otel_perf.__all__ == sorted(otel_perf.__all__)
    assert set(otel_perf.__all__) == {"__version__", "counter", "current_trace_id", "histogram", "measure"}
    public = {
        name
        for name, value in vars(otel_perf).items()
        if not name.startswith("_") and getattr(value, "__module__", "") != "__future__"
        and not (isinstance(value, type(otel_perf)))  # submodules are not API
    }  # fmt: skip
    assert public == set(otel_perf.__all__) - {"__version__"}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components of the module-level import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == [], "import cycles (module-level imports): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_layers_only_import_downwards() -> None:
    upward = {
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    new = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, target in upward - KNOWN_UPWARD
    )
    assert new == [], "\n".join(new)
    assert upward >= KNOWN_UPWARD, f"fixed, take them out of KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"


def test_the_graph_is_read_at_all() -> None:
    """The checks above would pass on an empty graph: make sure known edges are found."""
    assert "otel_perf._core.outgoing" in GRAPH["otel_perf._integrations.httpx"]
    assert "otel_perf._core.runtime" not in GRAPH["otel_perf._core.outgoing"]  # TYPE_CHECKING only
    assert "otel_perf._setup.install" not in GRAPH["otel_perf._setup.distro"]  # inside a function
    assert "otel_perf._names" in GRAPH["otel_perf._core.outgoing"]  # from otel_perf import _names
