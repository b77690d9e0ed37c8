"""The shape of the code, checked: the import graph of shared/ and cli/ has no cycle, and its arrows run
one way, as docs/architecture.md draws them. Every import counts: module-level, function-local (where a
cycle likes to hide) and `if TYPE_CHECKING:` ones. Fast: it parses the source, it imports nothing."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("shared", "cli")

# Layers, lowest first: a module may import its own layer and those below it, never one above.
LAYERS = {
    "shared.core": 0,  # pure types and rules
    "shared.schemas": 0,  # data (JSON Schemas)
    "shared.registry": 1,  # adapters
    "shared.azure": 1,
    "shared.app_context": 2,  # the app's objects, built in one place
    "shared.imports": 3,  # features
    "shared.refresh": 3,
    "shared.replication": 3,
    "shared.dispatch": 4,  # the queue trigger's choice between two features
    "shared.ops": 4,  # the operator endpoints: read what every feature records
    "cli": 5,  # outside the app, on top of it
}
# Features do not import each other, except that refresh and replication hand their import requests to
# the imports feature (claims.queue_once) and record their outcomes with its recorder.
FEATURES = ("shared.imports", "shared.refresh", "shared.replication")
FEATURE_MAY_USE = {("shared.refresh", "shared.imports"), ("shared.replication", "shared.imports")}
# What the core may import: the core alone (and no adapter even within a function).
CORE_IMPORTS_ONLY = ("shared.core", "shared.schemas")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body (resolving `from pkg import module`)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import shared.core.x.y` -> the module that exists
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@cache
def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (the bare `shared` and `cli` packages left out: empty)."""
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name, *ROOTS} for name, path in found.items() if name not in ROOTS}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def group(module: str) -> str:
    return next(g for g in sorted(LAYERS, key=len, reverse=True) if module == g or module.startswith(g + "."))


def test_every_module_belongs_to_a_layer():
    strays = [m for m in graph() if not any(m == g or m.startswith(g + ".") for g in LAYERS)]
    assert not strays, f"modules in no layer (give them a package, and docs/architecture.md a line): {strays}"


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_names_a_cycle_hidden_in_a_function():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_arrows_run_down_the_layers():
    wrong = [f"{m} ({group(m)}) imports {d} ({group(d)})" for m, deps in graph().items()
             for d in deps if LAYERS[group(d)] > LAYERS[group(m)]]
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(sorted(wrong))


def test_the_core_imports_only_the_core():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() if group(m) in CORE_IMPORTS_ONLY
             for d in deps if group(d) not in CORE_IMPORTS_ONLY]
    assert not wrong, "\n".join(sorted(wrong))


def test_features_import_each_other_only_as_designed():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() if group(m) in FEATURES
             for d in deps if group(d) in FEATURES and group(d) != group(m)
             and (group(m), group(d)) not in FEATURE_MAY_USE]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_function_app_binds_only():
    """function_app.py imports the app's objects, the dispatcher and each feature's entry, nothing deeper."""
    deps = imports_of(REPO / "function_app.py", set(modules())) - set(ROOTS)
    assert not {d for d in deps if group(d) in ("shared.core", "shared.registry")} - {"shared.core.settings"}, deps


def test_docs_architecture_names_every_package_and_module():
    """docs/architecture.md's listing cannot fall behind the folders."""
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = [m for m in graph() if m.startswith("shared.") and m.rpartition(".")[2] not in text]
    packages = {m.split(".")[1] for m in graph() if m.count(".") >= 2}
    missing += [f"{p}/" for p in sorted(packages) if f"{p}/" not in text]
    assert not missing, f"docs/architecture.md does not name: {missing}"
