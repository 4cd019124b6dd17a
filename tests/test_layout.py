"""The package layout: a few top-level modules, packages by layer, and no import cycles.

Every ``import`` of every module counts, the ones inside functions too (an import moved into a
function still runs and still closes a cycle); only imports under ``if TYPE_CHECKING:`` (types
for the checker, never executed) are left out. Importing ``dnas.a.b`` from outside the package
``dnas.a`` also runs ``dnas/a/__init__.py``, so it depends on that package's own imports as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dnas

ROOT = Path(dnas.__file__).resolve().parent
TOP_LEVEL = {"__init__", "__main__", "api", "errors", "extend", "registry"}
LAYERS = {"benchmarks", "bilevel", "cli", "components", "config", "data", "diagnostics", "grid", "report", "retrain",
          "runtime", "spaces", "supernet"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["dnas", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every executed import statement in ``tree``."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the dnas modules its execution runs (see the module docstring)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for module, names in _imports(ast.parse(path.read_text(), str(path))):
            if module != "dnas" and not module.startswith("dnas."):
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in modules} or {module}
            for target in targets:
                parts = target.split(".")
                own = name if name in modules and modules[name].name == "__init__.py" else name.rpartition(".")[0]
                for i in range(2, len(parts) + 1):  # the packages it runs on the way (not the importer's own)
                    ancestor = ".".join(parts[:i])
                    if ancestor in modules and ancestor != name and not (own + ".").startswith(ancestor + "."):
                        graph[name].add(ancestor)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_module_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles_through_functions_and_packages():
    """The checker itself: an import inside a function closes a cycle, and so does a package's __init__."""
    tree = ast.parse("import os\nif TYPE_CHECKING:\n    import dnas.x\ndef f():\n    from dnas.a import b\n")
    assert _imports(tree) == [("os", []), ("dnas.a", ["b"])]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_few_top_level_modules_and_packages_by_layer():
    top = {p.stem for p in ROOT.glob("*.py")}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert top == TOP_LEVEL and packages == LAYERS


def test_the_registry_names_what_it_registers():
    """A component states its name once, in ``@REGISTRY.register(name)``; the registry sets ``cls.name``."""
    from dnas.components import SLOTS
    from dnas.registry import Registry

    for registry in SLOTS.values():
        for name in registry.names():
            assert registry.get(name).name == name
    things: Registry[type] = Registry("thing")

    @things.register("widget")
    class Widget:
        pass

    assert Widget.name == "widget" and things.get("widget") is Widget  # type: ignore[attr-defined]
