"""The package's layout: its layers import only downwards, and no module imports itself back.

The layers, lowest first (lazy_feature/__init__.py): errors < model < flow < kernel < run <
probe < study, then pipelines/. Imports inside functions count as much as those at the top.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("errors", "model", "flow", "kernel", "run", "probe", "study")
LONGEST_MODULE = 500  # lines: one concept per module


def _modules():
    """{dotted name: path} of every module of lazy_feature/ and pipelines/."""
    found = {}
    for top in ("lazy_feature", "pipelines"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path):
    """The package modules `path` imports anywhere in it (function-level imports included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES}


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


def _layer(module):
    """The index of `module`'s layer; the package's public face and pipelines/ sit on top."""
    parts = module.split(".")
    if parts[0] == "pipelines" or module == "lazy_feature":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def test_every_module_sits_in_a_layer():
    for module in MODULES:
        _layer(module)  # raises ValueError for a module outside the layers


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    upward = sorted(other for other in GRAPH[module] if _layer(other) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports from above: {upward}"


def test_no_import_cycle():
    """Depth-first search over the module graph; a back edge is a cycle. A package's
    __init__ re-exporting its own modules is no cycle (Python runs it first)."""
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for other in sorted(GRAPH[module]):
            if other == module or module.startswith(other + "."):  # its own package
                continue
            if state.get(other) == "open":
                cycles.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short(module):
    with open(MODULES[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= LONGEST_MODULE, f"{module} has {lines} lines: split it by concept"
