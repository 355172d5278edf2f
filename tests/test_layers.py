"""The package's layers import downward only, and no two modules import each other, even inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import its own layer and the layers below it. The package's __init__ is its facade
# (``pneumo.load``) and stands above everything.
LAYERS = [
    {"errors", "files", "labels", "paths", "plotting", "privacy", "text", "tables", "allocator"},
    {"data"},
    {"models", "config"},  # the networks and the recipe that builds them
    {"export"},
    {"inference", "predict", "explain", "store", "pacs", "scale"},  # the one path from pixels to an answer, and where answers go
    {"training"},
    {"evaluation"},
    {"fitting", "card"},  # refits bundles after measuring them; renders their cards
    {"serving", "api"},
    {"cli", "console"},  # the terminal is the command line's
]
LAYER = {unit: number for number, units in enumerate(LAYERS) for unit in units}


def imports() -> dict[str, set[str]]:
    """Every module of pneumo -> the pneumo modules it imports anywhere (top level or inside functions)."""
    graph = {}
    for path in (SRC / "pneumo").rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("pneumo.")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pneumo") and not node.level:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        graph[module] = targets
    known = set(graph)
    # "pneumo.models.bundle.load_bundle" -> "pneumo.models.bundle": the longest name that is a module.
    resolved = {}
    for module, targets in graph.items():
        found = set()
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module and target != "pneumo":
                found.add(target)
        resolved[module] = found
    return resolved


def unit(module: str) -> str:
    return module.split(".")[1]


def test_every_unit_has_a_layer():
    assert {unit(m) for m in imports() if m != "pneumo"} <= set(LAYER)


def test_layers_import_downward_only():
    upward = [f"{module} imports {target}" for module, targets in imports().items() if module != "pneumo"
              for target in targets if LAYER[unit(target)] > LAYER[unit(module)]]
    assert not upward, upward


def test_no_import_circles():
    graph = imports()
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, circles
