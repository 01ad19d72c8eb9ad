"""The import graph the package's docstring promises: layers, no circles, imports at the top."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lowbudget"

# The layers of lowbudget/__init__.py's docstring, lowest first. A module may import from its
# own package (a folder, or a top-level module) and from lower layers only.
LAYERS = [
    {"errors", "version", "assets"},
    {"checks", "stats", "io", "progress"},
    {"viz", "recipe"},
    {"models", "data"},
    {"adapters", "evaluate", "phantoms"},
    {"sampling"},
    {"training", "sharing"},
    {"federation"},
    {"bench", "doctor"},
    {"cli"},
    {"__main__", "__init__"},  # the entry points: `python -m lowbudget`, `import lowbudget`
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported lowbudget module, at the module's top level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lowbudget":
            # `from lowbudget.x import y` imports lowbudget.x.y when that is a module, else lowbudget.x
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            found += [(name, id(node) in top) for name in names or [node.module]]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "lowbudget"]
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module: {name for name, _ in _imports(path)} for module, path in MODULES.items()}


def test_every_package_has_a_layer():
    assert {_package(m) for m in MODULES} <= set(RANK), {_package(m) for m in MODULES} - set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_lower_layers(module):
    upward = [t for t in GRAPH[module] if _package(t) != _package(module) and RANK[_package(t)] >= RANK[_package(module)]]
    assert not upward, f"{module} imports from a layer at or above its own: {upward}"


def test_the_import_graph_has_no_circles():
    seen, stack, circles = set(), [], []

    def visit(module):
        if module in stack:
            circles.append(stack[stack.index(module):] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            visit(target)
        stack.pop()

    for module in sorted(MODULES):
        visit(module)
    assert not circles, circles


def test_imports_stand_at_the_top_outside_the_cli():
    # cli/ imports lazily so that `lowbudget --help` starts fast; the package root imports
    # load_adapter lazily so that `import lowbudget` stays cheap. Nowhere else hides the graph.
    inner = [(module, name) for module, path in MODULES.items() if _package(module) not in ("cli", "__init__")
             for name, at_top in _imports(path) if not at_top]
    assert not inner, inner


def test_every_package_folder_is_a_regular_package():
    # a folder without __init__.py imports here (a namespace package) but is left out of a wheel
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    assert not [f for f in folders if not (f / "__init__.py").is_file()]


def test_only_the_cli_imports_typer():
    users = [module for module, path in MODULES.items() if _package(module) != "cli"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and any((getattr(node, "module", None) or a.name).split(".")[0] == "typer" for a in node.names)]
    assert not users, users


def test_flower_is_imported_by_the_federation_package_only():
    """flwr is the `federate` extra: everything else runs without it (the CLI imports the package lazily)."""
    importers = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] == "flwr" for name in names):
                importers.add(module)
    assert importers and all(m.startswith("lowbudget.federation") for m in importers), importers
