"""The tree keeps its shape: no import cycle among the product's modules, and no
module imports one from a layer above its own (doc/source/architecture.rst).

Every import counts: at module level, inside functions, and under
``if TYPE_CHECKING:``. A module in no layer fails the test, so a new module
has to be given its place.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rbd_driver"

# Lowest first. A module may import its own layer and the ones below it.
# The deprecated shims at the old top-level paths (krbd, libvirt_config,
# libvirt_secret, backup, golden, provision, snapshots, collector) sit in the
# layer of the module they re-export.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rbd_driver", "rbd_driver.conf", "rbd_driver.exception")),
    # storage/krbd.py is kernelspace mechanics (sysfs writes, the kernel keyring).
    ("storage", ("rbd_driver.storage", "rbd_driver.krbd")),
    ("access", ("rbd_driver.libvirt", "rbd_driver.volumes", "rbd_driver.encryption",
                "rbd_driver.libvirt_config", "rbd_driver.libvirt_secret")),
    ("backends", ("rbd_driver.imagebackend", "rbd_driver.backends")),
    ("managers", ("rbd_driver.ops", "rbd_driver.backup", "rbd_driver.golden",
                  "rbd_driver.provision", "rbd_driver.snapshots", "rbd_driver.collector")),
    ("testing", ("rbd_driver.testing",)),
    # rbd_driver.cli is the package: cli/__init__ (main), _common, output, and one
    # module per command group. commands*.py are its deprecated shims.
    ("command", ("rbd_driver.cli", "rbd_driver.cli._common", "rbd_driver.cli.output",
                 "rbd_driver.cli.cluster", "rbd_driver.cli.disks", "rbd_driver.cli.backup",
                 "rbd_driver.cli.golden", "rbd_driver.cli.provision",
                 "rbd_driver.cli.devcluster", "rbd_driver.cli.__main__",
                 "rbd_driver.commands", "rbd_driver.commands_backup",
                 "rbd_driver.commands_golden", "rbd_driver.commands_provision",
                 "rbd_driver.demo")),
]
# The fake librbd mirrors the C library's object graph (a cluster knows its
# images, an image its cluster); its modules may import each other freely.
CYCLES_ALLOWED_UNDER = "rbd_driver.testing.fakes"


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        deps.update(t for t in targets if t in modules and t != name)
    return deps


def _layer(name: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (name.startswith(prefix + ".") and prefix != "rbd_driver"):
                best = max(best, (len(prefix), index))
    return best[1]


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert [name for name in MODULES if _layer(name) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = [f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})"
             for name, deps in GRAPH.items() for dep in sorted(deps)
             if _layer(dep) > _layer(name)]
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_products_modules() -> None:
    product = {name: {d for d in deps if not d.startswith(CYCLES_ALLOWED_UNDER)}
               for name, deps in GRAPH.items() if not name.startswith(CYCLES_ALLOWED_UNDER)}
    assert _cycles(product) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected) -> None:
    assert _cycles(graph) == expected


def test_the_walk_sees_function_level_and_type_checking_imports() -> None:
    # rbd_utils builds its spares and flatten queue on demand, importing them in
    # a function; the walk must see those edges or a cycle through them hides.
    assert "rbd_driver.storage.spares" in GRAPH["rbd_driver.storage.rbd_utils"]
    assert "rbd_driver.storage.flatten_queue" in GRAPH["rbd_driver.storage.rbd_utils"]
