"""Imports point down the layers of ../shared/ARCHITECTURE.md, and no two files import each other in a circle.

Every import is read, including those inside functions (a lazy import is still an arrow). The checker is tested on
a small tree with a deliberate upward import and a deliberate cycle, so a silent checker can't pass."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A folder may import its own files and any folder below it, never one above it.
LAYERS = ["extractors", "export", "visualsearch", "server", "launchers", "evaluation", "benchmarks", "clients"]
# Copied into Triton's model repository and run by its python backend: it can import no project module at all.
STANDALONE = ["export/templates"]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules(root: Path, layers: list[str]) -> dict[str, Path]:
    out = {}
    for layer in layers:
        for path in sorted((root / layer).rglob("*.py")):
            if "node_modules" not in path.parts:
                out[module_name(path, root)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            while t and t not in modules:  # ``import a.b.c`` of a package: the deepest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(root: Path, layers: list[str]) -> dict[str, set[str]]:
    modules = project_modules(root, layers)
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(layers)}
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if rank[b.split(".")[0]] > rank[a.split(".")[0]])


def standalone_imports(graph: dict[str, set[str]], standalone: list[str]) -> list[str]:
    prefixes = [s.replace("/", ".") for s in standalone]
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if any(a.startswith(p) for p in prefixes))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. files importing each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def folder_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    folders: dict[str, set[str]] = {}
    for a, targets in graph.items():
        folders.setdefault(a.split(".")[0], set()).update(b.split(".")[0] for b in targets if b.split(".")[0] !=
                                                          a.split(".")[0])
    return cycles(folders)


def test_imports_point_down():
    graph = import_graph(ROOT, LAYERS)
    assert len(graph) > 50  # the whole project was read
    assert upward_imports(graph, LAYERS) == []


def test_triton_model_file_imports_nothing_of_the_project():
    assert standalone_imports(import_graph(ROOT, LAYERS), STANDALONE) == []


def test_no_import_cycles_between_files_or_folders():
    graph = import_graph(ROOT, LAYERS)
    assert cycles(graph) == []
    assert folder_cycles(graph) == []


def test_checker_catches_an_upward_import_and_a_cycle(tmp_path):
    def write(rel: str, text: str = "") -> None:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    write("low/__init__.py")
    write("low/a.py", "def f():\n    from high.b import g  # lazy, still an arrow up\n")
    write("low/c.py", "from . import d\n")
    write("low/d.py", "from low.c import x\n")
    write("high/__init__.py")
    write("high/b.py", "import low.a\n")
    graph = import_graph(tmp_path, ["low", "high"])
    assert upward_imports(graph, ["low", "high"]) == ["low.a -> high.b"]
    assert ["low.c", "low.d"] in cycles(graph)
    assert ["high", "low"] in folder_cycles(graph)
